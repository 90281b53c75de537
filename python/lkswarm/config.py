"""The resolved scenario of one run (validated by pydantic; the report echoes it)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lkswarm.errors import ConfigError
from lkswarm.protocol import CLIENT_PROTOCOL

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str | float) -> float:
    """``30``, ``30s``, ``2m``, ``1.5h``, ``500ms`` → seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"invalid duration {text!r} (use e.g. 30, 30s, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class RunConfig(BaseModel):
    """Everything a run needs; the CLI and scenario files fill it in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, description="Server URL; None starts an embedded local server")
    rooms: int = Field(default=1, ge=1, le=100_000)
    participants: int = Field(default=10, ge=1, le=1_000_000, description="participants per room")
    rate: float = Field(default=20.0, gt=0, description="joins started per second")
    arrival: Literal["constant", "poisson"] = "constant"
    duration_s: float = Field(default=10.0, gt=0)
    signal_only: bool = Field(default=False, description="signaling only: no PeerConnections (evicted after 60 s)")
    audio_publishers: int = Field(default=0, ge=0, description="audio publishers per room")
    video_publishers: int = Field(default=0, ge=0, description="video publishers per room")
    simulcast: bool = Field(default=True, description="publish video as 3 VP8 simulcast layers (q, h, f)")
    talk_spurts: bool = Field(default=False, description="audio follows ITU-T P.59 talk spurts instead of a tone")
    media_connect_timeout_s: float = Field(default=30.0, gt=0, description="ICE + DTLS deadline per PeerConnection")
    media_bind_ip: str = Field(default="127.0.0.1", description="local address of the PeerConnection sockets")
    json_frames: bool = Field(default=False, description="send text (protojson) frames instead of binary")
    auto_subscribe: bool = True
    protocol: int = Field(default=CLIENT_PROTOCOL, ge=0)
    join_timeout_s: float = Field(default=15.0, gt=0)
    room_prefix: str = "lkswarm"
    identity_prefix: str = "p"
    seed: int | None = None
    resume_on_disconnect: bool = Field(default=False, description="resume (reconnect=1) when the WebSocket drops")
    run_tag: str = Field(default="", description="suffix that makes room names and identities unique per run")
    verify_rooms: bool = Field(default=True, description="compare each participant's room view with ListParticipants")

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        if isinstance(value, str | int | float):
            return parse_duration_s(value)
        raise ValueError("duration must be a number of seconds or a string like 30s")

    @property
    def total_participants(self) -> int:
        return self.rooms * self.participants

    def room_name(self, index: int) -> str:
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.room_prefix}{tag}-{index}"

    def identity(self, index: int) -> str:
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.identity_prefix}{index}{tag}"
