"""``--data-size`` is refused before the run when its DataPacket would pass livekit's 64,000 B message limit.

A payload of 64,000 B used to pass the options and then fail every data publisher at run time
("a 64055 B message is over the 64000 B limit"): the bound must cover the packet around the payload.
"""

from __future__ import annotations

import pytest

from lkswarm.config import MAX_DATA_PACKET_BYTES, RunConfig, data_packet_overhead_bytes
from lkswarm.errors import ConfigError

URL = "ws://127.0.0.1:7880"


def _config(**fields: object) -> RunConfig:
    return RunConfig(url=URL, participants=60, data_publishers=1, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("extra", [{}, {"data_topic": "t" * 256, "data_to": "50"}, {"identity_prefix": "load-"}])
def test_the_bound_covers_the_largest_packet_the_encoder_writes(extra: dict[str, object]) -> None:
    """Checked against the schema oracle: the longest identity the run can give (a 10-digit index and a
    6-character tag), every destination, the topic, a 16-byte nonce and a 32-bit sequence."""
    from livekit.protocol import models

    config = _config(**extra).pinned()
    identity = config.identity(9_999_999_999)
    destinations = [identity] * (0 if config.data_to == "all" else int(config.data_to))
    payload = b"\0" * 1000
    user = models.UserPacket(
        payload=payload,
        topic=config.data_topic,
        participant_identity=identity,
        destination_identities=destinations,
        nonce=b"\xff" * 16,
    )
    packet = models.DataPacket(
        kind=models.DataPacket.Kind.LOSSY,
        user=user,
        participant_identity=identity,
        destination_identities=destinations,
        sequence=2**32 - 1,
    )
    overhead = len(packet.SerializeToString()) - len(payload)
    assert overhead <= data_packet_overhead_bytes(config) <= overhead * 1.1 + 64  # tight enough to be useful


def test_a_payload_that_leaves_no_room_for_its_packet_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match=r"data_size 64000 B leaves no room .* at most \d+ B"):
        _config(data_size=64_000)
    most = MAX_DATA_PACKET_BYTES - data_packet_overhead_bytes(_config())
    assert most > 63_800
    _config(data_size=most)  # the most the message says is accepted
    with pytest.raises(ConfigError):
        _config(data_size=most - 2_000, data_to="50", data_topic="x" * 256)
    RunConfig(url=URL, data_size=64_000)  # no data publishers: nothing is sent, nothing to refuse
