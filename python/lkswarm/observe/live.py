"""The live view: a rich panel redrawn once per sample while a run lasts (on a TTY, unless --quiet)."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from lkswarm.engine.timeline import ROLLING_WINDOW_S, RunInfo, Snapshot, rolling_ms


def render(snap: Snapshot, duration_s: float) -> Group:
    """The panel for one snapshot (a pure function of it, so tests can render it without a TTY)."""
    header = Text.assemble(
        ("lkswarm ", "bold"),
        f"{snap.t_s:5.0f} / {duration_s:.0f} s   ",
        ("started ", "dim"),
        f"{snap.started}/{snap.planned}",
    )
    bar = ProgressBar(total=max(1, snap.planned), completed=snap.started, width=60)
    counts = Text.assemble(
        ("joined ", "dim"),
        (f"{snap.joined}", "bold"),
        ("   active ", "dim"),
        (f"{snap.active}", "bold green"),
        ("   alive ", "dim"),
        f"{snap.alive}",
        ("   failed ", "dim"),
        (f"{snap.failed}", "bold red" if snap.failed else ""),
        ("   left ", "dim"),
        f"{snap.left}",
    )
    phases = Table(box=None, padding=(0, 2), title=f"last {ROLLING_WINDOW_S:.0f} s", title_justify="left")
    for column in ("phase", "count", "p50 ms", "p99 ms"):
        phases.add_column(column, justify="left" if column == "phase" else "right")
    for phase, (count, p50, p99) in snap.rolling_ms.items():
        phases.add_row(phase, str(count), f"{p50:.1f}", f"{p99:.1f}")
    media = Text.assemble(
        ("media ", "dim"),
        f"{snap.media_packets_per_s:,.0f} pkt/s   ",
        ("loss ", "dim"),
        f"{snap.media_loss_ratio * 100:.2f} %",
    )
    if snap.data_sent or snap.data_received:
        media.append_text(
            Text.assemble(
                ("   data ", "dim"),
                f"{snap.data_sent_per_s:,.0f} sent/s, {snap.data_received_per_s:,.0f} received/s",
            )
        )
    if snap.data_track_sent or snap.data_track_received:
        media.append_text(
            Text.assemble(
                ("   data tracks ", "dim"),
                f"{snap.data_track_sent_per_s:,.0f} frames/s sent, {snap.data_track_received_per_s:,.0f} received/s",
            )
        )
    generator = Text.assemble(
        ("generator ", "dim"),
        f"cpu {snap.cpu_percent:.0f} %   loop lag p99 {snap.loop_lag_p99_ms:.1f} ms   rss {snap.rss_mb:.0f} MB",
    )
    parts: list[Text | Table | ProgressBar] = [header, bar, counts, phases, media, generator]
    if snap.failures:
        top = ", ".join(f"{reason} {count}" for reason, count in sorted(snap.failures.items(), key=lambda x: -x[1])[:4])
        parts.append(Text.assemble(("failures ", "dim"), (top, "red")))
    if snap.invalid_reason:
        parts.append(Text(f"RUN INVALID: {snap.invalid_reason}", style="bold yellow"))
    return Group(*parts)


class LiveView:
    """An `Observer` that redraws the panel on every sample."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._duration_s = 0.0
        self._info: RunInfo | None = None

    async def start(self, info: RunInfo) -> None:
        self._info = info
        self.open(info.duration_s)

    def open(self, duration_s: float) -> None:
        """Starts drawing; without `start`'s run, snapshots must bring their own ``rolling_ms``."""
        self._duration_s = duration_s
        self._live = Live(console=self.console, auto_refresh=False, transient=True)
        self._live.start()

    def on_sample(self, snapshot: Snapshot) -> None:
        if self._live is None:
            return
        if self._info is not None:
            snapshot.rolling_ms = rolling_ms(self._info.metrics, time.perf_counter())
        self._live.update(render(snapshot, self._duration_s), refresh=True)

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
