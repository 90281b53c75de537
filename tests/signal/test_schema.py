"""Our compiled schema (``protos/``, embedded in the extension) against the oracle.

The codec walks the descriptor set that ``rust/build.rs`` compiles from
``protos/``; ``lkswarm._core.schema_descriptor_set()`` returns those exact bytes.
``protos/schema_compare.py`` compares them, type by type and field by field, with
the descriptors shipped in ``livekit-protocol``. The comparison itself is checked
too: it must see the whole signaling schema and must notice a deliberate change.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from lkswarm import _core

ROOT = Path(__file__).resolve().parents[2]


def _load_schema_compare() -> ModuleType:
    # protos/ is not a package; load the module by path under a private name.
    spec = importlib.util.spec_from_file_location("_lkswarm_schema_compare", ROOT / "protos" / "schema_compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


sc = _load_schema_compare()
ROOTS: tuple[str, ...] = (*sc.DEFAULT_ROOTS, *sc.JOIN_ROOTS)


@pytest.fixture(scope="module")
def oracle() -> Any:
    return sc.oracle_descriptor_set()


@pytest.fixture
def ours() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(_core.schema_descriptor_set())
    return fds


def _find_message(fds: descriptor_pb2.FileDescriptorSet, full_name: str) -> descriptor_pb2.DescriptorProto:
    for f in fds.file:
        scope = f.package
        todo = [(f"{scope}.{m.name}".lstrip("."), m) for m in f.message_type]
        while todo:
            name, msg = todo.pop()
            if name == full_name:
                return msg
            todo.extend((f"{name}.{n.name}", n) for n in msg.nested_type)
    raise KeyError(full_name)


def _find_enum(fds: descriptor_pb2.FileDescriptorSet, full_name: str) -> descriptor_pb2.EnumDescriptorProto:
    for f in fds.file:
        for e in f.enum_type:
            if f"{f.package}.{e.name}" == full_name:
                return e
        todo = [(f"{f.package}.{m.name}", m) for m in f.message_type]
        while todo:
            name, msg = todo.pop()
            for e in msg.enum_type:
                if f"{name}.{e.name}" == full_name:
                    return e
            todo.extend((f"{name}.{n.name}", n) for n in msg.nested_type)
    raise KeyError(full_name)


def test_descriptor_set_is_well_formed(ours: descriptor_pb2.FileDescriptorSet) -> None:
    names = [f.name for f in ours.file]
    assert len(names) == len(set(names))
    assert {"livekit/models.proto", "livekit/signal.proto"} <= set(names)
    for f in ours.file:
        assert f.syntax == "proto3", f.name
        assert f.package == "livekit", f.name


def test_schema_matches_oracle(oracle: Any) -> None:
    diffs = sc.compare(oracle, _core.schema_descriptor_set(), ROOTS)
    assert diffs == [], "\n".join(diffs)


def test_comparison_is_not_vacuous(oracle: Any, ours: descriptor_pb2.FileDescriptorSet) -> None:
    reachable = sc.reachable(oracle, ROOTS)
    idx = sc._index(oracle)
    messages = [n for n in reachable if idx[n].kind == "message"]
    enums = [n for n in reachable if idx[n].kind == "enum"]
    assert len(messages) >= 80, messages
    assert len(enums) >= 20, enums
    for name in [
        *ROOTS,
        "livekit.ParticipantInfo",
        "livekit.TrackInfo",
        "livekit.DataTrackSubscriberHandles",
    ]:
        assert name in reachable
    # Every type the oracle reaches exists in ours, with as many fields.
    ours_idx = sc._index(ours)
    for name in messages:
        assert name in ours_idx, name
        assert len(ours_idx[name].proto.field) == len(idx[name].proto.field), name
    envelope_fields = sum(len(idx[r].proto.field) for r in sc.DEFAULT_ROOTS)
    assert envelope_fields >= 50


def _rename_field(fds: Any) -> str:
    _find_message(fds, "livekit.TrackInfo").field[0].name = "renamed_sid"
    return "livekit.TrackInfo.sid"


def _renumber_field(fds: Any) -> str:
    msg = _find_message(fds, "livekit.ParticipantInfo")
    msg.field[-1].number = 999
    return "livekit.ParticipantInfo"


def _retype_field(fds: Any) -> str:
    field = next(f for f in _find_message(fds, "livekit.Ping").field if f.name == "timestamp")
    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
    return "livekit.Ping.timestamp"


def _drop_oneof_member(fds: Any) -> str:
    msg = _find_message(fds, "livekit.SignalResponse")
    del msg.field[-1]
    return "livekit.SignalResponse: missing field"


def _json_name(fds: Any) -> str:
    field = _find_message(fds, "livekit.TrickleRequest").field[0]
    field.json_name = "candidate_init"
    return "livekit.TrickleRequest.candidateInit"


def _enum_number(fds: Any) -> str:
    _find_enum(fds, "livekit.DisconnectReason").value[1].number = 77
    return "livekit.DisconnectReason"


def _drop_optional(fds: Any) -> str:
    for f in _find_message(fds, "livekit.ConnectionSettings").field:
        if f.proto3_optional:
            f.proto3_optional = False
            return "proto3_optional"
    raise AssertionError("ConnectionSettings has no proto3 optional field")


def _repeated_to_singular(fds: Any) -> str:
    field = next(f for f in _find_message(fds, "livekit.UpdateSubscription").field if f.name == "track_sids")
    field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    return "livekit.UpdateSubscription.track_sids"


MUTATIONS: list[Callable[[Any], str]] = [
    _rename_field,
    _renumber_field,
    _retype_field,
    _drop_oneof_member,
    _json_name,
    _enum_number,
    _drop_optional,
    _repeated_to_singular,
]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__.strip("_"))
def test_mutated_schema_is_reported(
    oracle: Any, ours: descriptor_pb2.FileDescriptorSet, mutate: Callable[[Any], str]
) -> None:
    expect = mutate(ours)
    diffs = sc.compare(oracle, ours.SerializeToString(), ROOTS)
    assert diffs, f"{mutate.__name__} went unnoticed"
    assert any(expect in d for d in diffs), diffs


def test_missing_type_is_reported(oracle: Any, ours: descriptor_pb2.FileDescriptorSet) -> None:
    for f in ours.file:
        for i, m in enumerate(f.message_type):
            if m.name == "SpeakerInfo":
                del f.message_type[i]
                break
    assert "missing message livekit.SpeakerInfo" in sc.compare(oracle, ours, ROOTS)


def test_the_rpc_messages_our_participants_answer_match_the_oracle(oracle: Any) -> None:
    """DataPacket is a data-channel message, not reachable from the signal roots; its RPC variants, which
    rust/src/media/data/rpc.rs reads and writes by these field numbers, are compared on their own."""
    roots = ("livekit.RpcRequest", "livekit.RpcAck", "livekit.RpcResponse")
    assert "livekit.RpcError" in sc.reachable(oracle, roots)
    assert sc.compare(oracle, _core.schema_descriptor_set(), roots) == []
