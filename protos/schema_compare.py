"""Compare lkswarm's protobuf schema with the LiveKit reference descriptors.

The comparison works on plain ``FileDescriptorSet`` data so that it can be fed
from anywhere: ``protoc --descriptor_set_out --include_imports``, a descriptor
set emitted by the Rust build, or the descriptors embedded in the
``livekit-protocol`` Python package (see :func:`oracle_descriptor_set`).

Only types reachable from the given root messages are checked (through field
types, map entries and the messages that merely act as namespaces for a
reachable nested type). Anything else in either set is ignored.

``compare`` is pure: no I/O; it only needs ``google.protobuf`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor_pb2 import FieldDescriptorProto

DEFAULT_ROOTS: tuple[str, ...] = ("livekit.SignalRequest", "livekit.SignalResponse")
# Not reachable from the envelopes, but lkswarm sends them on /rtc/v1.
JOIN_ROOTS: tuple[str, ...] = ("livekit.JoinRequest", "livekit.WrappedJoinRequest")


def _type_name(t: int) -> str:
    # "TYPE_SINT64" -> "sint64"; keeps sint/fixed/bytes distinctions visible.
    return FieldDescriptorProto.Type.Name(t)[5:].lower()  # type: ignore[arg-type]


def _label_name(label: int) -> str:
    return FieldDescriptorProto.Label.Name(label)[6:].lower()  # type: ignore[arg-type]


@dataclass
class _Type:
    kind: str  # "message" | "enum"
    proto: Any  # DescriptorProto | EnumDescriptorProto
    parent: str | None  # enclosing message's full name, None at file level
    file: str
    refs: list[str] = field(default_factory=list)


def _files(fds: Any) -> Iterator[Any]:
    """Accept a FileDescriptorSet, serialized bytes of one, or FileDescriptorProtos."""
    if isinstance(fds, (bytes, bytearray, memoryview)):
        from google.protobuf.descriptor_pb2 import FileDescriptorSet

        parsed = FileDescriptorSet()
        parsed.ParseFromString(bytes(fds))
        fds = parsed
    yield from getattr(fds, "file", fds)


def _index(fds: Any) -> dict[str, _Type]:
    out: dict[str, _Type] = {}

    def add_enum(e: Any, scope: str, parent: str | None, fname: str) -> None:
        out[f"{scope}.{e.name}".lstrip(".")] = _Type("enum", e, parent, fname)

    def add_msg(m: Any, scope: str, parent: str | None, fname: str) -> None:
        name = f"{scope}.{m.name}".lstrip(".")
        refs = [f.type_name.lstrip(".") for f in m.field if f.type_name]
        out[name] = _Type("message", m, parent, fname, refs)
        for nested in m.nested_type:
            add_msg(nested, name, name, fname)
        for e in m.enum_type:
            add_enum(e, name, name, fname)

    for f in _files(fds):
        for m in f.message_type:
            add_msg(m, f.package, None, f.name)
        for e in f.enum_type:
            add_enum(e, f.package, None, f.name)
    return out


def reachable(fds: Any, roots: Iterable[str] = DEFAULT_ROOTS) -> list[str]:
    """Full names (no leading dot) of every type the roots depend on, sorted."""
    return sorted(_closure(_index(fds), roots)[0])


def _closure(idx: dict[str, _Type], roots: Iterable[str]) -> tuple[set[str], list[str]]:
    seen: set[str] = set()
    missing: list[str] = []
    todo = [r.lstrip(".") for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        t = idx.get(name)
        if t is None:
            missing.append(name)
            continue
        seen.add(name)
        todo.extend(t.refs)
        if t.parent:  # a nested type needs its enclosing message to exist
            todo.append(t.parent)
    return seen, missing


def default_json_name(name: str) -> str:
    """protoc's rule: drop underscores, upper-case the letter after each."""
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _json_name(f: Any) -> str:
    # Descriptors embedded in generated code omit json_name unless it is custom.
    return f.json_name if f.HasField("json_name") else default_json_name(f.name)


def _deprecated(opts_owner: Any) -> bool:
    return bool(opts_owner.HasField("options") and opts_owner.options.deprecated)


def _field_facts(msg: Any, f: Any, check_deprecated: bool) -> dict[str, Any]:
    facts = {
        "name": f.name,
        "type": _type_name(f.type),
        "type_name": f.type_name.lstrip("."),
        "label": _label_name(f.label),
        "proto3_optional": f.proto3_optional,
        "oneof": msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
        "json_name": _json_name(f),
    }
    if check_deprecated:
        facts["deprecated"] = _deprecated(f)
    return facts


def _compare_message(name: str, o: _Type, u: _Type, check_deprecated: bool) -> list[str]:
    diffs: list[str] = []
    om, um = o.proto, u.proto
    o_map = om.HasField("options") and om.options.map_entry
    u_map = um.HasField("options") and um.options.map_entry
    if o_map != u_map:
        diffs.append(f"{name}: map_entry oracle={o_map} ours={u_map}")
    if check_deprecated and _deprecated(om) != _deprecated(um):
        diffs.append(f"{name}: deprecated oracle={_deprecated(om)} ours={_deprecated(um)}")

    o_fields = {f.number: f for f in om.field}
    u_fields = {f.number: f for f in um.field}
    for num in sorted(o_fields.keys() | u_fields.keys()):
        of, uf = o_fields.get(num), u_fields.get(num)
        if of is None:
            diffs.append(f"{name}: extra field {num} ({u_fields[num].name}) not in oracle")
            continue
        if uf is None:
            diffs.append(f"{name}: missing field {num} ({of.name})")
            continue
        ofacts = _field_facts(om, of, check_deprecated)
        ufacts = _field_facts(um, uf, check_deprecated)
        for key, oval in ofacts.items():
            if ufacts[key] != oval:
                diffs.append(f"{name}.{of.name} (#{num}): {key} oracle={oval!r} ours={ufacts[key]!r}")
    return diffs


def _compare_enum(name: str, o: _Type, u: _Type, check_deprecated: bool) -> list[str]:
    diffs: list[str] = []
    oe, ue = o.proto, u.proto
    o_alias = oe.HasField("options") and oe.options.allow_alias
    u_alias = ue.HasField("options") and ue.options.allow_alias
    if o_alias != u_alias:
        diffs.append(f"{name}: allow_alias oracle={o_alias} ours={u_alias}")
    if check_deprecated and _deprecated(oe) != _deprecated(ue):
        diffs.append(f"{name}: deprecated oracle={_deprecated(oe)} ours={_deprecated(ue)}")
    o_vals = {v.name: v for v in oe.value}
    u_vals = {v.name: v for v in ue.value}
    for vname in sorted(o_vals.keys() | u_vals.keys()):
        ov, uv = o_vals.get(vname), u_vals.get(vname)
        if ov is None:
            diffs.append(f"{name}: extra value {vname} = {u_vals[vname].number} not in oracle")
        elif uv is None:
            diffs.append(f"{name}: missing value {vname} = {ov.number}")
        elif ov.number != uv.number:
            diffs.append(f"{name}.{vname}: number oracle={ov.number} ours={uv.number}")
        elif check_deprecated and _deprecated(ov) != _deprecated(uv):
            diffs.append(f"{name}.{vname}: deprecated oracle={_deprecated(ov)} ours={_deprecated(uv)}")
    # Proto3 decodes unknown enum numbers as the first value's default; keep it equal.
    if oe.value and ue.value and oe.value[0].name != ue.value[0].name:
        diffs.append(f"{name}: first value oracle={oe.value[0].name} ours={ue.value[0].name}")
    return diffs


def compare(
    oracle_fds: Any,
    ours: Any,
    roots: Iterable[str] = DEFAULT_ROOTS,
    *,
    check_deprecated: bool = True,
) -> list[str]:
    """Every difference between the two schemas for the types reachable from
    ``roots`` in the oracle, as human-readable lines. Empty list == identical.

    Both arguments may be a ``FileDescriptorSet``, its serialized bytes, or an
    iterable of ``FileDescriptorProto``. The ``deprecated`` options are compared
    unless ``check_deprecated`` is false; other options (e.g. LiveKit's logger
    annotations) are ignored because they do not affect encoding.
    """
    roots = tuple(roots)
    o_idx, u_idx = _index(oracle_fds), _index(ours)
    names, missing_roots = _closure(o_idx, roots)
    diffs = [f"root {r} not found in oracle" for r in missing_roots]
    for name in sorted(names):
        o = o_idx[name]
        u = u_idx.get(name)
        if u is None:
            diffs.append(f"missing {o.kind} {name}")
            continue
        if u.kind != o.kind:
            diffs.append(f"{name}: oracle has a {o.kind}, ours a {u.kind}")
            continue
        if u.parent != o.parent:
            diffs.append(f"{name}: enclosing message oracle={o.parent} ours={u.parent}")
        if o.kind == "message":
            diffs.extend(_compare_message(name, o, u, check_deprecated))
        else:
            diffs.extend(_compare_enum(name, o, u, check_deprecated))
    return diffs


def oracle_descriptor_set(module: str = "livekit.protocol.rtc") -> Any:
    """FileDescriptorSet of the reference package (``livekit-protocol``) for
    ``module`` and all its dependencies. Imports lazily; not pure."""
    import importlib

    from google.protobuf import descriptor_pb2

    root = importlib.import_module(module).DESCRIPTOR
    out = descriptor_pb2.FileDescriptorSet()
    done: set[str] = set()

    def visit(fd: Any) -> None:
        if fd.name in done:
            return
        done.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        out.file.append(descriptor_pb2.FileDescriptorProto.FromString(fd.serialized_pb))

    visit(root)
    return out
