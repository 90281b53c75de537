"""The committed SRTP vectors (tests/vectors/srtp_gcm.json) are libsrtp's behaviour: regenerated here
with pylibsrtp, in memory, they must equal the file byte for byte. rust/tests/srtp_rx_differential.rs
holds our own SRTP receive path to the same outcomes."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parents[1] / "tools" / "srtp_vectors.py"


@functools.cache
def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_lkswarm_srtp_vectors", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_are_what_libsrtp_does_now() -> None:
    tool = _tool()
    regenerated = tool.render(tool.build())
    committed = tool.OUTPUT.read_text()
    assert json.loads(committed) == json.loads(regenerated), "regenerate: .venv/bin/python tests/tools/srtp_vectors.py"
    assert committed == regenerated


def test_vectors_cover_every_outcome_for_both_profiles() -> None:
    doc = json.loads(_tool().OUTPUT.read_text())
    assert [p["profile"] for p in doc["profiles"]] == ["AEAD_AES_128_GCM", "AEAD_AES_256_GCM"]
    for profile in doc["profiles"]:
        outcomes = {packet["libsrtp"] for packet in profile["packets"]}
        assert outcomes == {"ok", "replay", "replay_old", "auth", "malformed"}
        ok = [p for p in profile["packets"] if p["libsrtp"] == "ok"]
        assert any(p["index"] >= 1 << 16 for p in ok), "the stream crosses the 16-bit wrap"
        assert len({p["ssrc"] for p in ok}) == 2
