#!/usr/bin/env python3
"""Dev check: do lkswarm's protos/livekit/*.proto match livekit-protocol?

Compiles our .proto files into a FileDescriptorSet (grpc_tools.protoc when
importable, else a `protoc` binary) and compares every message/enum reachable
from SignalRequest/SignalResponse (and JoinRequest/WrappedJoinRequest) with
the descriptors shipped in the `livekit-protocol` package, which is our
oracle. Prints each difference; exit status 1 if there are any.

Needs: protobuf, livekit-protocol (1.1.29), and grpcio-tools or protoc.

    python protos/check_schema.py                  # compile + compare
    python protos/check_schema.py --descriptor-set out.pb   # skip compiling
    python protos/check_schema.py --self-test      # prove it catches drift
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import schema_compare  # noqa: E402


def proto_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "livekit").glob("*.proto"))


def compile_protos(root: Path = HERE, protoc: str | None = None) -> bytes:
    """Serialized FileDescriptorSet (with imports and source info stripped)."""
    files = proto_files(root)
    if not files:
        raise SystemExit(f"no .proto files under {root / 'livekit'}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "schema.pb")
        args = [f"-I{root}", f"--descriptor_set_out={out}", "--include_imports", *files]
        if protoc is None:
            try:
                from grpc_tools import protoc as grpc_protoc
            except ImportError:
                protoc = shutil.which("protoc")
                if protoc is None:
                    raise SystemExit("need grpcio-tools (pip install grpcio-tools) or protoc on PATH") from None
            else:
                rc = grpc_protoc.main(["protoc", *args])
                if rc != 0:
                    raise SystemExit(f"protoc (grpc_tools) failed with status {rc}")
                return Path(out).read_bytes()
        res = subprocess.run([protoc, *args], cwd=root, check=False)
        if res.returncode != 0:
            raise SystemExit(f"{protoc} failed with status {res.returncode}")
        return Path(out).read_bytes()


def self_test(oracle: Any, ours_bytes: bytes) -> int:
    """Mutate our descriptors in a few representative ways and make sure each
    mutation is reported; guards against a vacuous comparison."""
    from google.protobuf import descriptor_pb2

    def find(fds: Any, full: str) -> Any:
        parts = full.split(".")
        for f in fds.file:
            if f.package != parts[0]:
                continue
            pool: Any = f.message_type
            node: Any = None
            for p in parts[1:]:
                node = next((m for m in pool if m.name == p), None)
                if node is None:
                    break
                pool = node.nested_type
            if node is not None:
                return node
        raise KeyError(full)

    def enum(fds: Any, full: str) -> Any:
        parent, name = full.rsplit(".", 1)
        return next(e for e in find(fds, parent).enum_type if e.name == name)

    def field(msg: Any, name: str) -> Any:
        return next(f for f in msg.field if f.name == name)

    F = descriptor_pb2.FieldDescriptorProto
    mutations: dict[str, Callable[[Any], Any]] = {
        "type sint64": lambda s: setattr(field(find(s, "livekit.Ping"), "rtt"), "type", F.TYPE_SINT64),
        "field number": lambda s: setattr(field(find(s, "livekit.Pong"), "timestamp"), "number", 7),
        "label": lambda s: setattr(field(find(s, "livekit.RoomUpdate"), "room"), "label", F.LABEL_REPEATED),
        "oneof dropped": lambda s: field(find(s, "livekit.SignalResponse"), "pong").ClearField("oneof_index"),
        "proto3 optional": lambda s: setattr(
            field(find(s, "livekit.DataTrackSubscriptionOptions"), "target_fps"), "proto3_optional", False
        ),
        "json_name": lambda s: setattr(field(find(s, "livekit.TrickleRequest"), "candidateInit"), "json_name", "x"),
        "type_name": lambda s: setattr(
            field(find(s, "livekit.AddTrackRequest"), "encryption"), "type_name", ".livekit.TrackType"
        ),
        "enum value": lambda s: setattr(enum(s, "livekit.RequestResponse.Reason").value[11], "number", 12),
        "nested message removed": lambda s: find(s, "livekit.DataTrackSubscriberHandles").ClearField("nested_type"),
        "map entry flag": lambda s: find(s, "livekit.ParticipantInfo.AttributesEntry").options.ClearField("map_entry"),
    }
    failed = 0
    for label, mutate in mutations.items():
        copy = descriptor_pb2.FileDescriptorSet.FromString(ours_bytes)
        mutate(copy)
        diffs = schema_compare.compare(oracle, copy, schema_compare.DEFAULT_ROOTS)
        status = "caught" if diffs else "MISSED"
        failed += 0 if diffs else 1
        print(f"self-test {label:24s} {status}: {diffs[0] if diffs else ''}")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--descriptor-set", type=Path, help="compare this FileDescriptorSet instead of compiling")
    ap.add_argument("--protoc", help="protoc binary to use instead of grpc_tools")
    ap.add_argument("--root", type=Path, default=HERE, help="proto include root (default: this directory)")
    ap.add_argument("--roots", nargs="+", help="root messages (default: signal envelopes + join request)")
    ap.add_argument("--no-deprecated", action="store_true", help="ignore `deprecated` options")
    ap.add_argument("--self-test", action="store_true", help="also check that injected drift is detected")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every checked type")
    args = ap.parse_args()

    ours = args.descriptor_set.read_bytes() if args.descriptor_set else compile_protos(args.root, args.protoc)
    oracle = schema_compare.oracle_descriptor_set()
    roots = tuple(args.roots) if args.roots else schema_compare.DEFAULT_ROOTS + schema_compare.JOIN_ROOTS

    diffs = schema_compare.compare(oracle, ours, roots, check_deprecated=not args.no_deprecated)
    checked = schema_compare.reachable(oracle, roots)
    if args.verbose:
        for name in checked:
            print("checked", name)
    for d in diffs:
        print("DIFF", d)
    print(f"{len(checked)} types checked from {', '.join(roots)}: {len(diffs)} difference(s)")

    failed = 0
    if args.self_test:
        failed = self_test(oracle, ours)
    return 1 if diffs or failed else 0


if __name__ == "__main__":
    sys.exit(main())
