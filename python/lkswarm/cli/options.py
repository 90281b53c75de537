"""The ``run`` command's options, one named type each, so the command's signature reads as a list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CONNECTION = "Connection"
SHAPE = "Load shape"
BEHAVIOUR = "Behaviour"
OUTPUT = "Output"

ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="LIVEKIT_API_KEY", help="API key.", show_envvar=True, rich_help_panel="Connection"
    ),
]
ApiSecret = Annotated[
    str | None,
    typer.Option(
        "--api-secret",
        envvar="LIVEKIT_API_SECRET",
        help="API secret (never printed or written to a report).",
        show_envvar=True,
        show_default=False,
        rich_help_panel="Connection",
    ),
]
ScenarioOpt = Annotated[
    Path | None,
    typer.Argument(help="Scenario file (TOML); flags override its keys.", show_default=False),
]
PresetOpt = Annotated[
    str | None, typer.Option(help="Run a shipped scenario (`lkswarm presets` lists them).", rich_help_panel=SHAPE)
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="LIVEKIT_URL",
        show_envvar=True,
        help="Server URL; without it an embedded local livekit-server runs for the run.",
        rich_help_panel=CONNECTION,
    ),
]
IHavePermissionOpt = Annotated[
    bool,
    typer.Option(
        "--i-have-permission",
        help="Allow more than 50 participants against *.livekit.cloud.",
        rich_help_panel=CONNECTION,
    ),
]
InsecureOpt = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Connect over wss:// and https:// without checking the server's certificate or host name (the report "
        "warns).",
        rich_help_panel=CONNECTION,
    ),
]
CaFileOpt = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        metavar="PATH",
        help="PEM CA bundle to trust besides the system's roots, for wss:// and https://.",
        rich_help_panel=CONNECTION,
    ),
]
RoomsOpt = Annotated[int | None, typer.Option(help="Number of rooms. (default 1)", rich_help_panel=SHAPE)]
RoomOpt = Annotated[
    str | None,
    typer.Option(
        help="Join this room (an existing one too) instead of rooms named lkswarm-<run tag>-N; with --rooms N "
        "they are ROOM-0 .. ROOM-(N-1).",
        rich_help_panel=SHAPE,
    ),
]
ParticipantsOpt = Annotated[int | None, typer.Option(help="Participants per room. (default 10)", rich_help_panel=SHAPE)]
AudioPublishersOpt = Annotated[
    str | None, typer.Option(help="Opus publishers per room, or 'all'. (default 0)", rich_help_panel=SHAPE)
]
VideoPublishersOpt = Annotated[
    str | None, typer.Option(help="VP8 publishers per room, or 'all'. (default 0)", rich_help_panel=SHAPE)
]
DataPublishersOpt = Annotated[
    str | None,
    typer.Option(
        help="Data-message publishers per room (the first seats), or 'all'. (default 0)", rich_help_panel=SHAPE
    ),
]
DataRateOpt = Annotated[
    float | None, typer.Option(help="Data messages per second per data publisher. (default 1)", rich_help_panel=SHAPE)
]
DataSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Payload bytes per data message, 20 to 64000 less its DataPacket (~84 B by default). (default 200)",
        rich_help_panel=SHAPE,
    ),
]
DataChannelOpt = Annotated[
    str | None,
    typer.Option(
        help="reliable (_reliable: ordered, retransmitted) or lossy (_lossy: unordered, no retransmission). "
        "(default reliable)",
        rich_help_panel=SHAPE,
    ),
]
DataTracksOpt = Annotated[
    int | None,
    typer.Option(
        help="Data-track publishers per room (the first seats), one track each; everyone else subscribes. (default 0)",
        rich_help_panel=SHAPE,
    ),
]
DataTrackRateOpt = Annotated[
    float | None, typer.Option(help="Frames per second per data track. (default 30)", rich_help_panel=SHAPE)
]
DataTrackSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Payload bytes per data-track frame (one packet), 0 to 15000. (default 64)", rich_help_panel=SHAPE
    ),
]
DataBurstOpt = Annotated[
    int | None,
    typer.Option(
        help="Extra data messages each data publisher sends back to back every --data-burst-every. (default 0)",
        rich_help_panel=SHAPE,
    ),
]
DataBurstEveryOpt = Annotated[
    str | None,
    typer.Option(help="Time between a data publisher's bursts, e.g. 5s. (default 10s)", rich_help_panel=SHAPE),
]
DataSlowReadersOpt = Annotated[
    int | None,
    typer.Option(
        help="Receivers per room (the last seats) that stop draining their data channels for --data-slow-pause "
        "every --data-slow-every; the report shows what that does to everyone else. (default 0)",
        rich_help_panel=SHAPE,
    ),
]
DataSlowPauseOpt = Annotated[
    str | None, typer.Option(help="How long a slow reader stops draining, e.g. 3s. (default 3s)", rich_help_panel=SHAPE)
]
DataSlowEveryOpt = Annotated[
    str | None, typer.Option(help="A slow reader pauses once per this period. (default 10s)", rich_help_panel=SHAPE)
]
DataTopicOpt = Annotated[str | None, typer.Option(help="Topic of each data message.", rich_help_panel=SHAPE)]
DataToOpt = Annotated[
    str | None,
    typer.Option(
        help="Destinations: all (everyone in the room) or N (the first N other identities a publisher sees). "
        "(default all)",
        rich_help_panel=SHAPE,
    ),
]
RateOpt = Annotated[
    float | None, typer.Option(help="Joins started per second (open model). (default 20)", rich_help_panel=SHAPE)
]
ArrivalOpt = Annotated[
    str | None,
    typer.Option(help="Arrival process: constant or poisson. (default constant)", rich_help_panel=SHAPE),
]
DurationOpt = Annotated[
    str | None,
    typer.Option(help="Run length: seconds, or 30s / 2m / 10m30s. (default 10s)", rich_help_panel=SHAPE),
]
ChurnRateOpt = Annotated[
    float | None,
    typer.Option(help="Once ramped, replace this many participants per second.", rich_help_panel=SHAPE),
]
ReconnectStormAtOpt = Annotated[
    str | None,
    typer.Option(help="At this time every participant drops its WebSocket and resumes.", rich_help_panel=SHAPE),
]
ReconnectStormModeOpt = Annotated[
    str | None,
    typer.Option(
        help="The storm's reconnect: resume (reconnect=1, the default) or rejoin (a fresh join with new "
        "PeerConnections, as after the server's leave RECONNECT).",
        rich_help_panel=SHAPE,
    ),
]
ReconnectStormWindowOpt = Annotated[
    str | None,
    typer.Option(
        help="Spread the storm's drops evenly over this window (e.g. 10s) instead of one instant.",
        rich_help_panel=SHAPE,
    ),
]
RpcEchoOpt = Annotated[
    bool,
    typer.Option(
        "--rpc-echo",
        help="Answer every RPC call to our participants with its payload (an agent's performRpc round trip), "
        "instead of as participants with no methods (1400).",
        rich_help_panel=BEHAVIOUR,
    ),
]
SignalOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--signal-only",
        help="Signaling only: no PeerConnections (the server evicts such participants after 60 s).",
        rich_help_panel=BEHAVIOUR,
    ),
]
ProbesOpt = Annotated[
    int | None,
    typer.Option(
        help="Participants (of all rooms) that are aiortc probes: real VP8/Opus, e2e latency.",
        rich_help_panel=BEHAVIOUR,
    ),
]
ProbeFractionOpt = Annotated[
    float | None, typer.Option(help="Or: this fraction of the participants are probes.", rich_help_panel=BEHAVIOUR)
]
ProbeImpairOpt = Annotated[
    str | None,
    typer.Option(
        help="Impair each probe's media each way with Linux netem/htb in a network namespace (root, embedded "
        "server): loss=2%,delay=40ms,jitter=10ms,rate=1mbit, any subset; each probe has a link of its own.",
        rich_help_panel=BEHAVIOUR,
    ),
]
VideoCodecOpt = Annotated[
    str | None, typer.Option(help="Published video codec: vp8 or h264. (default vp8)", rich_help_panel=BEHAVIOUR)
]
SimulcastOpt = Annotated[
    bool | None,
    typer.Option(
        "--simulcast/--no-simulcast",
        help="Video as 3 simulcast layers (q/h/f). (default simulcast)",
        rich_help_panel=BEHAVIOUR,
    ),
]
LayoutOpt = Annotated[
    str | None,
    typer.Option(help="Subscriber video layout: speaker or grid:N (track settings).", rich_help_panel=BEHAVIOUR),
]
SimulateSpeakersOpt = Annotated[
    bool,
    typer.Option(
        "--simulate-speakers",
        "--talk-spurts",
        help="Audio in ITU-T P.59 talk spurts with levels, so active speakers switch.",
        rich_help_panel=BEHAVIOUR,
    ),
]
JsonFramesOpt = Annotated[
    bool,
    typer.Option("--json-frames", help="Send JSON text frames instead of binary protobuf.", rich_help_panel=BEHAVIOUR),
]
SignalPathOpt = Annotated[
    str | None,
    typer.Option(
        help="Signaling path: v1 (/rtc/v1, one PeerConnection, join_request), v0 (/rtc, two PeerConnections), "
        "auto (v1, falling back to v0 on a 404, as today's SDKs do), or a client mix such as v1:70,v0:30. "
        "(default auto)",
        rich_help_panel=BEHAVIOUR,
    ),
]
JoinRequestCompressionOpt = Annotated[
    str | None,
    typer.Option(
        help="Compression of the /rtc/v1 join_request: gzip (as the JS SDK) or none (a longer URL, about 13 KB "
        "with a publisher's offer). (default gzip)",
        rich_help_panel=BEHAVIOUR,
    ),
]
MaxFrameBytesOpt = Annotated[
    int | None,
    typer.Option(
        help="Largest signal frame (or fragmented message) a participant accepts; a bigger one fails it with "
        "frame_too_large before it is buffered. All connections together buffer at most 4 of them. (default 16 MiB)",
        rich_help_panel=BEHAVIOUR,
    ),
]
ResumeOnDisconnectOpt = Annotated[
    bool | None,
    typer.Option(help="Resume (reconnect=1) when a WebSocket drops.", rich_help_panel=BEHAVIOUR),
]
VerifyRoomsOpt = Annotated[
    bool | None,
    typer.Option(
        help="At the end, compare each room view with ListParticipants. (default on)", rich_help_panel=BEHAVIOUR
    ),
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for arrivals and media.", rich_help_panel=BEHAVIOUR)]
WorkersOpt = Annotated[
    str | None,
    typer.Option(
        help="Generator processes on this machine, or 'auto' (one per core): rooms are split among them and "
        "their reports merged into one. (default 1)",
        rich_help_panel=BEHAVIOUR,
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on Ray actors: 'local' (a Ray instance on this machine, for this run), 'auto' (the cluster this "
        "machine belongs to) or ray://HOST:10001. --workers is then the number of actors (default: one per CPU "
        "of the cluster). Needs pip install 'lkswarm\\[ray]'.",
        rich_help_panel=BEHAVIOUR,
    ),
]
WorkersPerNodeOpt = Annotated[
    int | None,
    typer.Option(
        help="With --ray: at most this many actors on one node. (default: one per CPU)", rich_help_panel=BEHAVIOUR
    ),
]
JsonPathOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the report (lkswarm.report/1) here.", rich_help_panel=OUTPUT)
]
CsvDirOpt = Annotated[
    Path | None,
    typer.Option("--csv", help="Write the report's CSV tables here (README: Reports).", rich_help_panel=OUTPUT),
]
HtmlPathOpt = Annotated[
    Path | None, typer.Option("--html", help="Write a single-file HTML report with plots.", rich_help_panel=OUTPUT)
]
ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Pass/fail check, k6 style (repeatable): 'join_response.p99<500ms', 'failed==0'. A failure exits 99.",
        rich_help_panel=OUTPUT,
    ),
]
PrometheusOpt = Annotated[
    str | None,
    typer.Option(help="Serve live lkswarm_* metrics at HOST:PORT/metrics.", rich_help_panel=OUTPUT),
]
ServerMetricsOpt = Annotated[
    str | None,
    typer.Option(
        help="The server's Prometheus endpoint (http://HOST:PORT/metrics) for the report's server section: "
        "its cores, packets in and out, loss, NACKs. The embedded server's is read without it.",
        rich_help_panel=CONNECTION,
    ),
]
QuietOpt = Annotated[bool, typer.Option(help="No live view and no summary; errors only.", rich_help_panel=OUTPUT)]


def publishers_value(value: str | None) -> int | str | None:
    """``--audio-publishers 3`` or ``all``; anything else is left for RunConfig to reject."""
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"publishers must be a number or 'all', not {value!r}") from None
