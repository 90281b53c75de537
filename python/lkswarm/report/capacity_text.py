"""The ``capacity`` section in words and rows: the console verdict, levels.csv and the console/HTML levels table.

Pure functions of a `CapacitySection` (lkswarm.capacity.schema): the search fills the section, these only
read it. Values the search could not measure are None and are left out of the text (an empty CSV cell).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from lkswarm.capacity.schema import CapacitySection, Level, SloResult
from lkswarm.errors import ReportError
from lkswarm.report.csv_tables import write_atomically

LEVEL_FIELDS = (
    "index", "phase", "fresh", "participants", "rooms", "publishers", "subscribers", "verdict", "reason",
    "hold_start_s", "hold_end_s", "join_p95_ms", "join_count", "ping_p99_ms", "ping_count", "failed", "attempted",
    "loss_ratio", "gen_cpu_percent", "gen_lateness_p99_ms", "gen_bound", "server_cores", "server_rss_mb",
    "server_packets_out_per_s", "server_bytes_out_per_s", "retransmit_share", "nacks_per_s", "plis_per_s",
)  # fmt: skip
# The levels table: these, then one column per SLO of the search (its text, e.g. "join_response.p95<1s"), then
# `TABLE_TAIL`. A search judged on other SLOs shows those, not fixed join and ping columns.
TABLE_HEAD = ["level", "participants", "verdict"]
TABLE_TAIL = ["failed", "server cores", "gen cpu"]
# After an SLO's observed value: nothing for a PASS, so what failed stands out.
VERDICT_MARKS = {"PASS": "", "FAIL": " FAIL", "INCONCLUSIVE": " ?"}
GENERATOR_ADVICE = (
    "this is not the server's limit: give the generator more cores or a second machine (a search runs one generator "
    "process)"
)


# --- formatting ----------------------------------------------------------------------------------------


def _g(value: float) -> str:
    """Three significant digits without a trailing '.0' or exponent for everyday magnitudes."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def format_ms(value: float) -> str:
    """Latency: '412 ms' below a second, '1.4 s' from one second up."""
    return f"{_g(value / 1000)} s" if abs(value) >= 1000 else f"{_g(value)} ms"


def format_ratio(value: float) -> str:
    return f"{_g(value * 100)} %"


def is_ratio_key(key: str) -> bool:
    """SLO keys ending in ``_ratio`` hold a share (0..1); every other SLO key is a latency in ms."""
    return key.endswith("_ratio")


def format_slo_value(key: str, value: float) -> str:
    return format_ratio(value) if is_ratio_key(key) else format_ms(value)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


# --- the levels that the verdict is about ------------------------------------------------------------


def capacity_level(section: CapacitySection) -> Level | None:
    """The passing level at the capacity: the last measured (a confirm run, if any) at ``value`` participants."""
    value = section.get("value")
    if value is None:
        return None
    passing = [level for level in section["levels"] if level["verdict"] == "PASS"]
    at_value = [level for level in passing if level["participants"] == value]
    if at_value:
        return at_value[-1]
    below = [level for level in passing if level["participants"] <= value]
    return max(below, key=lambda level: level["participants"]) if below else None


def failing_level(section: CapacitySection) -> Level | None:
    """The first level measured that did not pass at the upper end of the interval (or at all, without one)."""
    upper = section["interval"][1]
    failed = [level for level in section["levels"] if level["verdict"] != "PASS"]
    at_upper = [level for level in failed if level["participants"] == upper]
    candidates = at_upper or failed
    return candidates[0] if candidates else None


def _generator_level(section: CapacitySection) -> Level | None:
    bound = [level for level in section["levels"] if level["verdict"] == "GENERATOR_BOUND"]
    return bound[0] if bound else None


# --- the one-paragraph verdict -------------------------------------------------------------------------


def _shape_words(section: CapacitySection, level: Level | None) -> str:
    """How the population is arranged, in the words of the dimension that grew."""
    if level is None:
        return ""
    rooms, pubs, subs = level["rooms"], level["publishers"], level["subscribers"]
    if section["grow"] == "subscribers":
        return f" in {_plural(rooms, 'room')} of {_plural(pubs, 'publisher')} + subscribers"
    if section["grow"] == "rooms":
        return f" in {_plural(rooms, 'room')} of {_plural(pubs, 'publisher')} + {_plural(subs, 'subscriber')}"
    return f" in {_plural(rooms, 'room')} of publishers + {_plural(subs, 'subscriber')}"


def _limiting_words(section: CapacitySection) -> str:
    """'limited by join_response.p95 (1.4 s > 1 s)', or the guard with its reason."""
    limiting = section.get("limiting")
    if not limiting:
        return ""
    level = failing_level(section)
    result = level["slos"].get(limiting) if level is not None else None
    if result is not None and result["observed"] is not None:
        observed, limit = result["observed"], result["limit"]
        # A FAIL can come from the confidence bound with the point estimate just under the limit: no '>' then.
        relation = ">" if observed > limit else "vs"
        values = f"{format_slo_value(limiting, observed)} {relation} {format_slo_value(limiting, limit)}"
        return f"limited by {limiting} ({values})"
    if level is not None and level["reason"]:
        return f"limited by {limiting} ({level['reason']})"
    return f"limited by {limiting}"


def _server_words(section: CapacitySection, level: Level | None) -> str:
    server = level["server"] if level is not None else None
    if level is None or server is None or server["cores"] is None:
        return ""
    text = f"server at {_g(server['cores'])} cores at {level['participants']:,}"
    cpus = section["server_limit"].get("cpus")
    if isinstance(cpus, int | float) and cpus > 0:
        text += f" ({format_ratio(server['cores'] / cpus)} of its {cpus:g}-core limit)"
    return text


def _headroom_words(section: CapacitySection) -> str:
    limiting = section.get("limiting")
    shown = [f"{key} {format_ratio(v)}" for key, v in section["headroom"].items() if v is not None and key != limiting]
    return f"headroom {', '.join(shown)}" if shown else ""


def _knee_words(section: CapacitySection) -> str:
    knee = section["model"].get("knee_latency")
    x = (knee.get("coefficients") or {}).get("x") if knee and knee.get("ok") else None
    return f"latency knee near {x:,.0f}" if x is not None else ""


def _plan_words(section: CapacitySection) -> list[str]:
    """Per core, the projection and the server limits, each only when the search could give it."""
    plan = section["plan"]
    words = []
    per_core = plan.get("per_core")
    if isinstance(per_core, int | float):
        words.append(f"≈ {per_core:,.0f} per server core")
    projected = plan.get("projected")
    if isinstance(projected, dict):
        projected = projected.get("participants")
    if isinstance(projected, int | float):
        words.append(f"projected {projected:,.0f} at the target CPU")
    limits = []
    for key in ("limit_num_tracks", "limit_bytes_per_sec"):
        limit = plan.get(key)
        if isinstance(limit, int | float) and limit > 0:
            limits.append(f"limit.{key.removeprefix('limit_')} {limit:,.0f}")
    if limits:
        words.append("suggested " + ", ".join(limits))
    return words


def _lower_bound_head(section: CapacitySection, value: int, shape: str) -> str:
    generator = _generator_level(section)
    if generator is not None or section.get("limiting") == "generator":
        reason = generator["reason"] if generator is not None else "generator guard"
        head = f"Holds at least {value:,} participants{shape}"
        return f"{head}: the generator saturated first ({reason}); {GENERATOR_ADVICE}"
    search = section["search"]
    if search.get("stopped") in ("aborted", "error", "stopped"):
        why = "" if search.get("error") else f" ({_early_stop_words(section)})"
        return f"Holds at least {value:,} participants{shape}; the search stopped early{why} before it found the limit"
    stop = search.get("max") or value
    return f"Holds at least {value:,} participants{shape}; the search stopped at --max {stop}"


def _early_stop_words(section: CapacitySection) -> str:
    """Why a search ended before its own rules ended it: the aborted level's reason, or a stop (an error is
    said by the summary paragraph's opening)."""
    search = section["search"]
    if search.get("stopped") == "aborted":
        aborted = next((level for level in reversed(section["levels"]) if level["verdict"] == "ABORTED"), None)
        return str(aborted["reason"]) if aborted is not None and aborted["reason"] else "a level was aborted"
    return "the run was stopped"


def _nothing_passed(section: CapacitySection) -> str:
    levels = section["levels"]
    if not levels:
        return "No level was measured."
    first = levels[0]
    text = f"No level passed: {first['reason'] or first['verdict']}"
    text += f" (at {first['participants']:,} participants{_shape_words(section, first)})"
    if first["verdict"] == "GENERATOR_BOUND":
        text += f"; the generator saturated first — {GENERATOR_ADVICE}"
    return text + "."


def summary_paragraph(section: CapacitySection) -> str:
    """The console verdict: what the server holds, what gave way first, and what that costs in cores; first,
    why the search stopped early if its own driver failed."""
    error = (section.get("search") or {}).get("error")
    verdict = _verdict(section)
    return f"The search stopped early on an error ({error}); what it measured: {verdict}" if error else verdict


def _verdict(section: CapacitySection) -> str:
    value = section.get("value")
    if value is None or section["bound"] == "none":
        return _nothing_passed(section)
    level = capacity_level(section)
    shape = _shape_words(section, level)
    lower, upper = section["interval"]
    if section["bound"] == "lower" or upper is None:
        parts = [_lower_bound_head(section, value, shape)]
    else:
        interval = f"{lower if lower is not None else value:,}–{upper:,}"
        parts = [f"Holds {value:,} participants (interval {interval}){shape}", _limiting_words(section)]
    parts += [_server_words(section, level), _headroom_words(section), _knee_words(section), *_plan_words(section)]
    return "; ".join(part for part in parts if part) + "."


# --- rows and tables ----------------------------------------------------------------------------------


def slo_keys(section: CapacitySection) -> list[str]:
    """The SLOs in the order given, then any a level reports that the spec list lacks."""
    keys = [spec["key"] for spec in section["slos"]]
    return keys + list(dict.fromkeys(k for level in section["levels"] for k in level["slos"] if k not in keys))


def _level_row(level: Level, keys: list[str]) -> dict[str, object]:
    client, generator, server = level["client"], level["generator"], level["server"]
    row: dict[str, object] = {
        "index": level["index"], "phase": level["phase"], "fresh": level["fresh"],
        "participants": level["participants"], "rooms": level["rooms"], "publishers": level["publishers"],
        "subscribers": level["subscribers"], "verdict": level["verdict"], "reason": level["reason"],
        "hold_start_s": level["hold_s"][0], "hold_end_s": level["hold_s"][1],
        "join_p95_ms": client["join_response"]["p95"], "join_count": client["join_response"]["count"],
        "ping_p99_ms": client["ping_rtt"]["p99"], "ping_count": client["ping_rtt"]["count"],
        "failed": client["failed"], "attempted": client["attempted"], "loss_ratio": client["loss_ratio"],
        "gen_cpu_percent": generator["cpu_percent"], "gen_lateness_p99_ms": generator["lateness_p99_ms"],
        "gen_bound": generator["bound"],
    }  # fmt: skip
    # Without server metrics the server columns are empty cells, not zeros: nothing was measured.
    for column, key in (
        ("server_cores", "cores"), ("server_rss_mb", "rss_mb"), ("server_packets_out_per_s", "packets_out_per_s"),
        ("server_bytes_out_per_s", "bytes_out_per_s"), ("retransmit_share", "retransmit_share"),
        ("nacks_per_s", "nacks_per_s"), ("plis_per_s", "plis_per_s"),
    ):  # fmt: skip
        row[column] = server.get(key) if server is not None else None
    for key in keys:
        result = level["slos"].get(key)
        row[f"slo:{key}"] = result["verdict"] if result is not None else ""
    return row


def level_rows(section: CapacitySection) -> list[dict[str, object]]:
    """One flat row per level, in the order measured: the columns of levels.csv."""
    keys = slo_keys(section)
    return [_level_row(level, keys) for level in section["levels"]]


def level_columns(section: CapacitySection) -> list[str]:
    return [*LEVEL_FIELDS, *(f"slo:{key}" for key in slo_keys(section))]


def write_levels_csv(path: Path, section: CapacitySection) -> Path:
    """Writes levels.csv (header only when no level was measured). Raises ReportError when it cannot."""

    def fill(handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=level_columns(section), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(level_rows(section))  # None (not measured) is an empty cell

    try:
        write_atomically(path, fill)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def slo_cell(key: str, result: SloResult | None) -> str:
    """One SLO at one level: its observed value, marked when it did not pass ("1.4 s FAIL", "12 ms ?"); a dash
    where the level has no result for it or nothing was observed."""
    if result is None:
        return "–"
    observed = result["observed"]
    shown = "–" if observed is None else format_slo_value(key, observed)
    return shown + VERDICT_MARKS.get(result["verdict"], f" {result['verdict']}")


def level_slo_text(level: Level, keys: list[str]) -> str:
    """The level's SLOs in one line, in the order of ``keys`` (`slo_keys`, the table's columns):
    "join_response.p95 1.4 s FAIL, ping_rtt.p99 80 ms"."""
    return ", ".join(f"{key} {slo_cell(key, level['slos'].get(key))}" for key in keys)


def levels_table(section: CapacitySection) -> list[list[str]]:
    """The levels as text cells for a console (or HTML) table, header row first: a column per SLO searched on."""
    keys = slo_keys(section)
    texts = {spec["key"]: spec["text"] for spec in section["slos"]}
    rows = [[*TABLE_HEAD, *(texts.get(key, key) for key in keys), *TABLE_TAIL]]
    for level in section["levels"]:
        client, server = level["client"], level["server"]
        cores = server["cores"] if server is not None else None
        rows.append(
            [
                f"{level['index']} {level['phase']}{' (fresh)' if level['fresh'] else ''}",
                f"{level['participants']:,}",
                level["verdict"],
                *(slo_cell(key, level["slos"].get(key)) for key in keys),
                f"{client['failed']:,}/{client['attempted']:,}",
                f"{cores:.2f}" if cores is not None else "–",
                f"{level['generator']['cpu_percent']:.0f} %",
            ]
        )
    return rows
