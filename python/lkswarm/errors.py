"""Exceptions raised by lkswarm.

The tree::

    LkswarmError
    ├── CodecError(ValueError)      malformed frame or a mapping that does not fit the schema
    ├── ConfigError(ValueError)     bad scenario, flags or environment
    ├── ServerError                 the local livekit-server could not be started or failed
    │   └── PortInUseError
    ├── SignalError                 a participant's signaling failed (HTTP status, timeout, ...)
    ├── MediaError(RuntimeError)    the media tier refused a request (bad SDP, no socket, unknown peer)
    └── ReportError                 a report file that cannot be read, merged or written

`CodecError` also subclasses `ValueError`, so ``except ValueError`` keeps working
for callers that treat bad bytes as bad values (the stdlib and aiortc habit).
The native module raises `CodecError` itself (see ``rust/src/py/errors.rs``).
"""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """An exception as one line for a report or the console: its type and its message, whitespace folded."""
    return f"{type(error).__name__}: {' '.join(str(error).split()) or 'no message'}"


class LkswarmError(Exception):
    """Root of every lkswarm error."""


class CodecError(LkswarmError, ValueError):
    """A frame that is not valid protobuf/JSON for its message type, or a mapping that cannot be encoded.

    Attributes:
        offset: byte offset of the problem in the input, when decoding binary frames.
        path: field path to the problem, e.g. ``update.participants[3].tracks[0].sid``.
    """

    def __init__(self, message: str, offset: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.offset = offset
        self.path = path


class ConfigError(LkswarmError, ValueError):
    """Bad scenario file, flags or environment."""


class ServerError(LkswarmError):
    """The local livekit-server could not be started, or died."""


class PortInUseError(ServerError):
    """A port the local server needs is already taken."""

    def __init__(self, port: int, what: str) -> None:
        super().__init__(f"port {port} ({what}) on 127.0.0.1 is already in use; choose another or stop what holds it")
        self.port = port


class SignalError(LkswarmError):
    """A participant's signaling connection failed; ``reason`` is the short code the report counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MediaError(LkswarmError, RuntimeError):
    """The media tier refused a request: unparsable SDP, no free UDP port, an unknown peer, ..."""


class ClusterError(LkswarmError, ConnectionError):
    """The distributed engine's cluster (Ray) could not be joined or started."""


class ReportError(LkswarmError):
    """A report file that is missing, not JSON, of another schema, or cannot be merged or written."""
