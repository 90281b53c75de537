"""A small protobuf wire model, for malformed-input tests, and its own checks.

``parse_message`` splits a frame the reference serializer wrote into field
occurrences (sub-messages keep their parsed children); ``MUTATIONS`` then change
it where the reference never goes: padded tags, lengths and varints (within and
past upb's limits), wrong wire types, bad lengths, invalid UTF-8, unknown fields
and groups (field number 0 included), duplicated, dropped or reordered fields,
unpacked or damaged packed runs. ``serialize`` writes the result back, keeping
the lengths around a change consistent unless a mutation breaks them on purpose.
The properties that use it live in ``test_codec_oracle.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st
from livekit.protocol import models, rtc

_T = FieldDescriptor
_U64 = st.one_of(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


def varint(value: int, width: int = 0) -> bytes:
    """``value`` (two's complement when negative) as a varint of at least ``width`` bytes:
    the extra bytes are redundant ``0x80`` continuations, which decoders must accept
    up to their limits and reject past them."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    while len(out) < width:
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


@dataclass
class Node:
    """One field occurrence; sub-messages keep their parsed children so that mutations
    deep inside still get consistent lengths around them."""

    number: int
    wire: int
    value: int = 0
    payload: bytes = b""
    children: list[Node] | None = None
    field: FieldDescriptor | None = None
    tag_width: int = 0
    len_width: int = 0
    value_width: int = 0
    len_delta: int = 0
    end_number: int | None = None


def _clone(node: Node) -> Node:
    return replace(node, children=None if node.children is None else [_clone(c) for c in node.children])


def serialize(nodes: list[Node]) -> bytes:
    out = bytearray()
    for n in nodes:
        out += varint(n.number << 3 | n.wire, n.tag_width)
        if n.wire == 0:
            out += varint(n.value, n.value_width)
        elif n.wire in (1, 5):
            out += n.payload
        elif n.wire == 2:
            body = serialize(n.children) if n.children is not None else n.payload
            out += varint(max(len(body) + n.len_delta, 0), n.len_width) + body
        elif n.wire == 3:
            out += serialize(n.children or [])
            out += varint((n.number if n.end_number is None else n.end_number) << 3 | 4)
    return bytes(out)


def parse_message(data: bytes, desc: Descriptor) -> list[Node]:
    """The fields of a frame the reference serializer wrote (so: no groups)."""
    nodes, pos = [], 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        node = Node(tag >> 3, tag & 7, field=desc.fields_by_number.get(tag >> 3))
        if node.wire == 0:
            node.value, pos = read_varint(data, pos)
        elif node.wire in (1, 5):
            width = 8 if node.wire == 1 else 4
            node.payload, pos = data[pos : pos + width], pos + width
        else:
            size, pos = read_varint(data, pos)
            body, pos = data[pos : pos + size], pos + size
            if node.field is not None and node.field.type == _T.TYPE_MESSAGE:
                node.children = parse_message(body, node.field.message_type)
            else:
                node.payload = body
        nodes.append(node)
    return nodes


def _lists(nodes: list[Node]) -> list[list[Node]]:
    out = [nodes]
    for n in nodes:
        if n.children is not None:
            out.extend(_lists(n.children))
    return out


def _pick(draw: st.DrawFn, tree: list[Node], want: Callable[[Node], bool] = lambda n: True) -> Node | None:
    candidates = [n for lst in _lists(tree) for n in lst if want(n)]
    return draw(st.sampled_from(candidates)) if candidates else None


_BAD_UTF8 = [
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\x80",
    b"\xf8\x88\x80\x80\x80",
]
_WIDTHS = st.integers(1, 11)


def _is_string(n: Node) -> bool:
    return n.wire == 2 and n.field is not None and n.field.type == _T.TYPE_STRING


def _is_packed(n: Node) -> bool:
    f = n.field
    return (
        n.wire == 2
        and f is not None
        and f.is_repeated
        and f.type not in (_T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_MESSAGE)
    )


def _pad(attr: str, want: Callable[[Node], bool]) -> Callable[[st.DrawFn, list[Node]], None]:
    def mutate(draw: st.DrawFn, tree: list[Node]) -> None:
        if (node := _pick(draw, tree, want)) is not None:
            setattr(node, attr, draw(_WIDTHS))

    return mutate


def _bad_utf8(draw: st.DrawFn, tree: list[Node]) -> None:
    if (node := _pick(draw, tree, _is_string)) is not None:
        at = draw(st.integers(0, len(node.payload)))
        node.payload = node.payload[:at] + draw(st.sampled_from(_BAD_UTF8)) + node.payload[at:]


def _bad_length(draw: st.DrawFn, tree: list[Node]) -> None:
    if (node := _pick(draw, tree, lambda n: n.wire == 2)) is not None:
        node.len_delta = draw(st.sampled_from([-3, -1, 1, 2, 100, 2**31, 2**32]))


def _wire_type(draw: st.DrawFn, tree: list[Node]) -> None:
    if (node := _pick(draw, tree)) is not None:
        node.wire = draw(st.sampled_from([w for w in (0, 1, 2, 3, 5) if w != node.wire]))
        node.value = draw(_U64)
        node.payload = draw(st.binary(min_size=8, max_size=8))[: 4 if node.wire == 5 else 8]
        if node.wire not in (2, 3):
            node.children = None


def _duplicate(draw: st.DrawFn, tree: list[Node]) -> None:
    lst = draw(st.sampled_from(_lists(tree)))
    if lst:
        lst.insert(draw(st.integers(0, len(lst))), _clone(draw(st.sampled_from(lst))))


def _drop_or_swap(draw: st.DrawFn, tree: list[Node]) -> None:
    lst = draw(st.sampled_from(_lists(tree)))
    if len(lst) >= 2 and draw(st.booleans()):
        i = draw(st.integers(0, len(lst) - 2))
        lst[i], lst[i + 1] = lst[i + 1], lst[i]
    elif lst:
        del lst[draw(st.integers(0, len(lst) - 1))]


def _unknown_node(draw: st.DrawFn, depth: int = 0) -> Node:
    number = draw(st.sampled_from([99, 1000, 2**29 - 1, 2**29, 0, 1, 2, 16]))
    wire = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
    node = Node(number, wire, value=draw(_U64), payload=draw(st.binary(max_size=6)))
    if wire in (1, 5):
        node.payload = bytes(8 if wire == 1 else 4)
    if wire == 3:
        node.children = [_unknown_node(draw, depth + 1) for _ in range(draw(st.integers(0, 2 if depth < 3 else 0)))]
        node.end_number = draw(st.sampled_from([None, None, None, number + 1]))
    return node


def _insert_unknown(draw: st.DrawFn, tree: list[Node]) -> None:
    lst = draw(st.sampled_from(_lists(tree)))
    lst.insert(draw(st.integers(0, len(lst))), _unknown_node(draw))


_FIXED_WIDTH = {
    **dict.fromkeys((_T.TYPE_FLOAT, _T.TYPE_FIXED32, _T.TYPE_SFIXED32), 4),
    **dict.fromkeys((_T.TYPE_DOUBLE, _T.TYPE_FIXED64, _T.TYPE_SFIXED64), 8),
}


def _unpack(draw: st.DrawFn, tree: list[Node]) -> None:
    """Rewrites a packed repeated field as one occurrence per element (valid protobuf)."""
    node = _pick(draw, tree, _is_packed)
    width = _FIXED_WIDTH.get(node.field.type, 1) if node is not None and node.field is not None else 1
    if node is None or node.field is None or len(node.payload) % width or node.payload[-1:] >= b"\x80":
        return  # a run that an earlier mutation damaged: leave it damaged
    lst = next(lst for lst in _lists(tree) if any(n is node for n in lst))
    wire = {4: 5, 8: 1}.get(width, 0)
    elems: list[Node] = []
    pos = 0
    while pos < len(node.payload):
        if wire:
            elems.append(Node(node.number, wire, payload=node.payload[pos : pos + width], field=node.field))
            pos += width
        else:
            value, pos = read_varint(node.payload, pos)
            elems.append(Node(node.number, 0, value=value, field=node.field))
    i = next(i for i, n in enumerate(lst) if n is node)
    lst[i : i + 1] = elems


def _damage_packed(draw: st.DrawFn, tree: list[Node]) -> None:
    if (node := _pick(draw, tree, _is_packed)) is not None:
        node.payload = draw(st.sampled_from([node.payload[:-1], node.payload + b"\x80", b"\x80" * 11, b"\x01\x02\x03"]))


def _new_varint(draw: st.DrawFn, tree: list[Node]) -> None:
    if (node := _pick(draw, tree, lambda n: n.wire == 0)) is not None:
        node.value = draw(_U64)


MUTATIONS: dict[str, Callable[[st.DrawFn, list[Node]], None]] = {
    "pad_tag": _pad("tag_width", lambda n: True),
    "pad_length": _pad("len_width", lambda n: n.wire == 2),
    "pad_varint": _pad("value_width", lambda n: n.wire == 0),
    "bad_utf8": _bad_utf8,
    "bad_length": _bad_length,
    "wire_type": _wire_type,
    "duplicate": _duplicate,
    "drop_or_swap": _drop_or_swap,
    "insert_unknown": _insert_unknown,
    "unpack": _unpack,
    "damage_packed": _damage_packed,
    "new_varint": _new_varint,
}


# ---------------------------------------------------------------- checks of the model itself


def test_varint_padding() -> None:
    assert varint(300) == b"\xac\x02"
    assert varint(300, 4) == b"\xac\x82\x80\x00"
    assert varint(0, 11) == b"\x80" * 10 + b"\x00"
    assert varint(-1) == b"\xff" * 9 + b"\x01"
    assert read_varint(varint(300, 6), 0) == (300, 6)


def test_parse_and_serialize_round_trip_reference_bytes() -> None:
    msg = rtc.SignalResponse(
        update=rtc.ParticipantUpdate(
            participants=[
                models.ParticipantInfo(
                    sid="PA", attributes={"a": "b"}, tracks=[models.TrackInfo(sid="TR", audio_features=[1, 300])]
                )
            ]
        )
    )
    wire = msg.SerializeToString()
    tree = parse_message(wire, msg.DESCRIPTOR)
    assert serialize(tree) == wire
    update = tree[0]
    assert update.children is not None and update.children[0].field is not None
    assert update.children[0].field.name == "participants"
    # Padding a tag changes the bytes but not the message; the reference agrees.
    update.tag_width = 5
    assert rtc.SignalResponse.FromString(serialize(tree)) == msg
