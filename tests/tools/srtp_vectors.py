"""libsrtp's SRTP receive behaviour on a fixed packet sequence: the oracle for our own receive path.

For both AEAD profiles (RFC 7714) and a fixed master key and salt, builds a deterministic sequence
of RTP packets, protects each once with a pylibsrtp sender session, arranges the protected
packets into a receive order (reordering around the 16-bit wrap, exact duplicates, forgeries,
packets late past the 128-packet replay window, two SSRCs interleaved) and records what a
pylibsrtp receiver session makes of each, in that order: the plaintext, or the error class.

rust/tests/srtp_rx_differential.rs feeds the same packets to `SrtpReceiver` and asserts the same
outcome packet by packet; tests/media/test_srtp_vectors.py regenerates the file in memory and
asserts it equals the committed one, so the file provably is libsrtp's behaviour.

    .venv/bin/python tests/tools/srtp_vectors.py   # writes tests/vectors/srtp_gcm.json
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pylibsrtp

OUTPUT = Path(__file__).resolve().parents[1] / "vectors" / "srtp_gcm.json"
TWCC_EXT_ID = 3
AUDIO_LEVEL_EXT_ID = 1
WINDOW_PACKETS = 128
SSRC_A = 0x11223344
SSRC_B = 0x55667788
PT_OPUS = 111
PROFILES = (
    ("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, bytes(range(1, 17))),
    ("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, bytes(range(101, 133))),
)
MASTER_SALT = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
# libsrtp's unprotect errors, by pylibsrtp's message, to the classes the Rust test maps.
ERROR_CLASSES = {
    "authentication failure": "auth",
    "replay check failed (bad index)": "replay",
    "replay check failed (index too old)": "replay_old",
    "unsupported parameter": "malformed",
}


@dataclass(frozen=True)
class Rtp:
    """One plain RTP packet and what a receiver should report for it once authenticated."""

    note: str
    ssrc: int
    seq: int
    index: int
    packet: bytes
    header_len: int
    payload_len: int
    transport_cc: int | None


def rtp_packet(
    ssrc: int,
    seq: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> tuple[bytes, int]:
    """An RTP packet (RFC 3550 §5.1) and its header length. `extension`: (profile, elements),
    the elements zero-padded to whole words; `padding`: that many padding octets, count last."""
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | len(csrcs)
    header = struct.pack(">BBHII", first, (0x80 if marker else 0) | PT_OPUS, seq, seq * 960 & 0xFFFFFFFF, ssrc)
    header += b"".join(struct.pack(">I", csrc) for csrc in csrcs)
    if extension is not None:
        profile, elements = extension
        elements += bytes(-len(elements) % 4)
        header += struct.pack(">HH", profile, len(elements) // 4) + elements
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + pad, len(header)


def one_byte_elements(twcc: int, level: int) -> bytes:
    """RFC 8285 §4.2: audio level (1 octet), then transport-wide-cc (2 octets)."""
    return bytes([AUDIO_LEVEL_EXT_ID << 4, level, TWCC_EXT_ID << 4 | 1]) + struct.pack(">H", twcc)


def stream_a() -> list[Rtp]:
    """SSRC A from SEQ 65500 across the wrap (ROC 0 to 1) to ROC 1's SEQ 112, in index order.
    Most packets carry a one-byte extension with transport-wide-cc; a few vary the header."""
    out = []
    seqs = [(0, seq) for seq in range(65500, 65536)] + [(1, seq) for seq in range(113)]
    for n, (roc, seq) in enumerate(seqs):
        twcc = (1000 + n) & 0xFFFF
        payload = struct.pack(">H", seq) + b"opus"
        note, transport_cc, kwargs = "one-byte extension", twcc, {}
        kwargs["extension"] = (0xBEDE, one_byte_elements(twcc, n & 0x7F))
        if seq == 65520:
            note, kwargs["csrcs"] = "two CSRCs", (0xC5C50001, 0xC5C50002)
        elif seq == 65525:
            note = "two-byte extension"
            elements = bytes([TWCC_EXT_ID, 2]) + struct.pack(">H", twcc) + bytes([AUDIO_LEVEL_EXT_ID, 1, 9])
            kwargs["extension"] = (0x1000, elements)
        elif seq == 5:
            note, kwargs["padding"] = "RTP padding", 4
        elif seq == 6:
            note, transport_cc = "extension of another profile", None
            kwargs["extension"] = (0xABAC, b"\x01\x02\x03\x04")
        elif seq == 7:
            note, transport_cc = "no extension", None
            del kwargs["extension"]
        packet, header_len = rtp_packet(SSRC_A, seq, payload, marker=n == 0, **kwargs)
        out.append(Rtp(note, SSRC_A, seq, roc << 16 | seq, packet, header_len, len(payload), transport_cc))
    return out


def stream_b() -> list[Rtp]:
    """SSRC B from SEQ 1000, then a jump of more than 2^15 while the ROC is 0 (libsrtp keeps ROC 0:
    no index can be negative), no extension."""
    out = []
    for seq in [*range(1000, 1020), 41019, 41020]:
        packet, header_len = rtp_packet(SSRC_B, seq, b"vp8" + bytes([seq & 0xFF]))
        note = "jump past 2^15 at ROC 0" if seq == 41019 else "no extension"
        out.append(Rtp(note, SSRC_B, seq, seq, packet, header_len, 4, None))
    return out


@dataclass(frozen=True)
class Delivery:
    rtp: Rtp
    srtp: bytes
    note: str


def flip_tag(srtp: bytes) -> bytes:
    return srtp[:-1] + bytes([srtp[-1] ^ 0x01])


def flip_timestamp(srtp: bytes) -> bytes:
    return srtp[:4] + bytes([srtp[4] ^ 0x80]) + srtp[5:]


def receive_order_a(protected: dict[int, Delivery]) -> Iterator[Delivery]:
    """Stream A as received: index order, but for the moves below."""

    def at(roc: int, seq: int, note: str | None = None, tamper: Callable[[bytes], bytes] | None = None) -> Delivery:
        d = protected[roc << 16 | seq]
        return replace(d, srtp=tamper(d.srtp) if tamper else d.srtp, note=note or d.note)

    held = {(0, 65505): (1, 96), (0, 65506): (1, 98), (0, 65510): (1, 110)}  # late until after these
    late_after = {after: held_back for held_back, after in held.items()}
    wrap = [(0, 65533), (1, 0), (0, 65535), (1, 1), (0, 65534), (1, 2)]
    for roc, seq in [(0, s) for s in range(65500, 65533)] + wrap + [(1, s) for s in range(3, 113)]:
        if (roc, seq) in held:
            continue
        if (roc, seq) == (1, 3):
            yield at(1, 0, "duplicate of SEQ 0 (ROC 1)")
            yield at(0, 65535, "duplicate of SEQ 65535 (ROC 0), after the wrap")
            yield at(0, 65500, "duplicate of the stream's first packet")
            yield at(1, 3, "tag bit flipped", flip_tag)
        if (roc, seq) == (1, 4):
            yield at(1, 4, "timestamp bit flipped", flip_timestamp)
        if (roc, seq) == (1, 5):
            yield at(1, 2, "timestamp bit flipped on a received index", flip_timestamp)
        if (roc, seq) == (1, 8):
            yield at(1, 8, "truncated inside the header extension", lambda srtp: srtp[:20])
        yield at(roc, seq, "reordered around the wrap" if (roc, seq) in wrap else None)
        if (roc, seq) in late_after:
            late_roc, late_seq = late_after[(roc, seq)]
            age = (roc << 16 | seq) - (late_roc << 16 | late_seq)
            yield at(late_roc, late_seq, f"late by {age} packets")


def receive_order_b(protected: dict[int, Delivery]) -> Iterator[Delivery]:
    for seq in [*range(1000, 1015), *range(1016, 1020), 41019, 41020]:
        yield protected[seq]
    yield replace(protected[1015], note="late from before the jump: read as ROC 1")


def build_profile(name: str, profile: int, master_key: bytes) -> dict[str, object]:
    master = master_key + MASTER_SALT
    sender = pylibsrtp.Session(pylibsrtp.Policy(master, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile))
    receiver_policy = pylibsrtp.Policy(master, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, profile)
    receiver_policy.window_size = WINDOW_PACKETS
    receiver = pylibsrtp.Session(receiver_policy)
    protected_a = {r.index: Delivery(r, sender.protect(r.packet), r.note) for r in stream_a()}
    protected_b = {r.index: Delivery(r, sender.protect(r.packet), r.note) for r in stream_b()}
    order_a, order_b = list(receive_order_a(protected_a)), list(receive_order_b(protected_b))
    # B's packets between A's, one every eight.
    order = []
    for n, delivery in enumerate(order_a):
        order.append(delivery)
        if n % 8 == 0 and order_b:
            order.append(order_b.pop(0))
    order.extend(order_b)
    return {
        "profile": name,
        "master_key": master_key.hex(),
        "master_salt": MASTER_SALT.hex(),
        "packets": [outcome(receiver, delivery) for delivery in order],
    }


def outcome(receiver: pylibsrtp.Session, delivery: Delivery) -> dict[str, object]:
    """What libsrtp's receiver made of one packet, with what the sender built it from."""
    rtp = delivery.rtp
    entry: dict[str, object] = {"note": delivery.note, "ssrc": rtp.ssrc, "seq": rtp.seq, "index": rtp.index}
    entry["srtp"] = delivery.srtp.hex()
    try:
        plaintext = receiver.unprotect(delivery.srtp)
    except pylibsrtp.Error as error:
        entry["libsrtp"] = ERROR_CLASSES[str(error)]
        return entry
    entry["libsrtp"] = "ok"
    entry["plaintext"] = plaintext.hex()
    entry.update(header_len=rtp.header_len, payload_len=rtp.payload_len, transport_cc=rtp.transport_cc)
    return entry


def build() -> dict[str, object]:
    return {
        "about": "libsrtp (pylibsrtp) receive outcomes, in order; written by tests/tools/srtp_vectors.py",
        "twcc_ext_id": TWCC_EXT_ID,
        "window_packets": WINDOW_PACKETS,
        "profiles": [build_profile(*p) for p in PROFILES],
    }


def render(doc: dict[str, object]) -> str:
    """JSON with one packet per line, so a diff of the file reads packet by packet."""
    lines = ["{"]
    for key, value in doc.items():
        if key != "profiles":
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "profiles": [')
    profiles = doc["profiles"]
    assert isinstance(profiles, list)
    for n, profile in enumerate(profiles):
        head = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in profile.items() if k != "packets")
        lines.append(f"    {{{head}, " + '"packets": [')
        packets = [f"      {json.dumps(packet)}" for packet in profile["packets"]]
        lines.append(",\n".join(packets))
        lines.append("    ]}" + ("," if n + 1 < len(profiles) else ""))
    lines.extend(["  ]", "}"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(build()))
    print(f"wrote {OUTPUT}")
