"""lkswarm: a load generator and signaling benchmark for LiveKit."""

from __future__ import annotations

from lkswarm._core import __version__
from lkswarm.errors import CodecError, ConfigError, LkswarmError, ServerError, SignalError

__all__ = ["CodecError", "ConfigError", "LkswarmError", "ServerError", "SignalError", "__version__"]
