"""From measured levels to the answer: the capacity interval, what limited it, the models and the plan.

Everything here is arithmetic on `Level` rows (no I/O), so it is tested on
synthetic levels. The capacity is the search's interval [last PASS, first
FAIL); the limiting SLO is the one that failed at the upper end (the worst
observed/limit ratio when several did); every other SLO's headroom is read at
the capacity level. The models (capacity.md §4):

- **knees** (Kneedle) of latency and of server cores against participants;
- **cores vs egress**: OLS of server cores on server egress packets/s over the
  levels with server figures, with its prediction band. Inverted at
  ``target_cpu x server_cores`` it projects the egress, and so the participants
  of this shape (egress per participant at the capacity level), one server of
  that size holds at that utilisation. Beyond 2x the largest level measured a
  projection is refused, not guessed;
- **USL** of delivered against offered media packets when there are ≥ 6 levels.

The plan's ``limit_num_tracks`` and ``limit_bytes_per_sec`` are livekit-server's
node limits (``limit.num_tracks`` counts tracks in + out, ``limit.bytes_per_sec``
bytes in + out per second, ``pkg/service/utils.go``), at the recommended
operating point: 90 % of the lower of the capacity and the CPU projection.
"""

from __future__ import annotations

from collections.abc import Sequence

from lkswarm.capacity.fits import kneedle, ols, usl
from lkswarm.capacity.schema import CapacitySection, Fit, Level, SloSpec
from lkswarm.capacity.search import Search
from lkswarm.capacity.slo import combine
from lkswarm.capacity.special import student_t_quantile

OPERATING_MARGIN = 0.10
MAX_EXTRAPOLATION = 2.0
MIN_OLS_LEVELS = 3
MIN_USL_LEVELS = 6


def _measured(levels: Sequence[Level]) -> list[Level]:
    """One level per population (the last measured), judged ones only, by population."""
    by_size: dict[int, Level] = {}
    for level in levels:
        if level["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE"):
            by_size[level["participants"]] = level
    return [by_size[size] for size in sorted(by_size)]


def _level_at(levels: Sequence[Level], participants: int | None) -> Level | None:
    if participants is None:
        return None
    found = [level for level in levels if level["participants"] == participants]
    return found[-1] if found else None


def limiting_of(level: Level | None) -> str | None:
    """What gave way at ``level``: the failing SLO, "generator", "inconclusive:<key>" or "aborted"."""
    if level is None:
        return None
    verdict = level["verdict"]
    if verdict == "GENERATOR_BOUND":
        return "generator"
    if verdict == "ABORTED":
        return "aborted"
    if verdict == "FAIL":
        return combine(level["slos"])[2]
    if verdict == "INCONCLUSIVE":
        key = next((k for k, r in level["slos"].items() if r["verdict"] == "INCONCLUSIVE"), None)
        return f"inconclusive:{key}" if key else "inconclusive"
    return None


def _headroom(level: Level | None, server_cpus: float | None) -> dict[str, float | None]:
    if level is None:
        return {}
    out: dict[str, float | None] = {key: result["headroom"] for key, result in level["slos"].items()}
    server = level["server"]
    if server_cpus and server is not None and server["cores"] is not None:
        out["server_cpu"] = round(1 - server["cores"] / server_cpus, 4)
    return out


def _knee(levels: list[Level], metric: str) -> Fit:
    points: list[tuple[float, float]] = []
    for level in levels:
        if metric == "server_cores":
            server = level["server"]
            if server is not None and server["cores"] is not None:
                points.append((level["participants"], server["cores"]))
        else:
            summary = level["client"]["join_response" if metric == "join_p95" else "ping_rtt"]
            if summary["count"]:
                points.append((level["participants"], summary["p95"] if metric == "join_p95" else summary["p99"]))
    fit: Fit = {"kind": "kneedle", "n": len(points), "x": "participants", "y": metric}
    if len(points) < MIN_OLS_LEVELS:
        return {**fit, "ok": False, "reason": f"{len(points)} levels with {metric}; a knee needs 3"}
    knee = kneedle([p[0] for p in points], [p[1] for p in points], increasing=True, convex=True)
    if knee is None:
        return {**fit, "ok": False, "reason": f"no knee in {metric} over the levels measured"}
    return {**fit, "ok": True, "coefficients": {"x": float(knee)}}


def _cores_vs_egress(levels: list[Level]) -> Fit:
    points = [
        (server["packets_out_per_s"], server["cores"])
        for level in levels
        if (server := level["server"]) is not None
        and server["packets_out_per_s"] is not None
        and server["cores"] is not None
        and level["verdict"] == "PASS"
    ]
    fit: Fit = {"kind": "ols", "n": len(points), "x": "server egress packets/s", "y": "server cores"}
    if len(points) < MIN_OLS_LEVELS:
        return {**fit, "ok": False, "reason": f"{len(points)} passing levels with server metrics; the fit needs 3"}
    model = ols([p[0] for p in points], [p[1] for p in points])
    return {
        **fit,
        "ok": True,
        "r2": round(model.r2, 4),
        "coefficients": {
            "intercept": model.intercept,
            "slope": model.slope,
            "s": model.residual_sd,
            "x_mean": model.x_mean,
            "sxx": model.sxx,
            "n": float(model.n),
            # Two-sided 95 % band: the renderer draws ŷ ± t·s·√(1 + 1/n + (x - x̄)²/Sxx) with this t.
            "t": student_t_quantile(0.975, model.n - 2),
        },
    }


def _usl(levels: list[Level]) -> Fit:
    points = [
        (
            level["participants"],
            level["client"]["packets_received"] / max(1e-6, level["hold_s"][1] - level["hold_s"][0]),
        )
        for level in levels
        if level["client"]["packets_expected"] > 0
    ]
    fit: Fit = {"kind": "usl", "n": len(points), "x": "participants", "y": "delivered packets/s"}
    if len(points) < MIN_USL_LEVELS:
        return {**fit, "ok": False, "reason": f"{len(points)} levels with media; USL needs 6"}
    model = usl([float(p[0]) for p in points], [p[1] for p in points])
    if model is None:
        return {**fit, "ok": False, "reason": "the USL fit did not converge"}
    coefficients = {"lambda": model.lam, "sigma": model.sigma, "kappa": model.kappa}
    if model.n_star is not None:
        coefficients["n_star"] = float(model.n_star)
    return {**fit, "ok": True, "r2": round(model.r2, 4), "coefficients": coefficients}


def _plan(
    levels: list[Level],
    capacity_level: Level | None,
    cores_fit: Fit,
    server_cores: float | None,
    target_cpu: float,
    notes: list[str],
) -> dict[str, object]:
    plan: dict[str, object] = {"target_cpu": target_cpu, "server_cores": server_cores, "notes": notes}
    if capacity_level is None:
        return plan
    participants = capacity_level["participants"]
    server = capacity_level["server"]
    projected: int | None = None
    if server is not None and server["cores"]:
        plan["per_core"] = round(participants / server["cores"], 1)
        plan["cores_at_capacity"] = server["cores"]
    egress = server["packets_out_per_s"] if server is not None else None
    if cores_fit.get("ok") and server_cores and egress:
        coefficients = cores_fit["coefficients"]
        slope = coefficients["slope"]
        if slope > 0:
            egress_at_target = (target_cpu * server_cores - coefficients["intercept"]) / slope
            projected = int(egress_at_target / (egress / participants))
            largest = max(level["participants"] for level in levels)
            if projected <= 0:
                # The fit's idle cost (its intercept) already exceeds the target: nothing to project.
                notes.append(
                    f"{target_cpu:.0%} of {server_cores:g} cores is below the server's fitted idle cost "
                    f"({coefficients['intercept']:.2f} cores): no CPU projection"
                )
                projected = None
            elif projected > MAX_EXTRAPOLATION * largest:
                notes.append(
                    f"the CPU projection ({projected} at {target_cpu:.0%} of {server_cores:g} cores) is more than "
                    f"{MAX_EXTRAPOLATION:g}x the largest level measured ({largest}): not extrapolated; measure higher"
                )
                projected = None
            else:
                plan["projected_at_target_cpu"] = projected
    operating = int(min(participants, projected if projected is not None else participants) * (1 - OPERATING_MARGIN))
    plan["operating_point"] = operating
    tracks_in = capacity_level["rooms"] * capacity_level["publishers"]
    per_room = capacity_level["publishers"] + capacity_level["subscribers"]
    tracks_out = tracks_in * max(0, per_room - 1)
    scale = operating / participants if participants else 0.0
    plan["limit_num_tracks"] = int((tracks_in + tracks_out) * scale)
    if server is not None and server["bytes_out_per_s"] is not None:
        bytes_in = server.get("bytes_in_per_s") or 0.0
        plan["limit_bytes_per_sec"] = int((server["bytes_out_per_s"] + bytes_in) * scale)
    return plan


GENERATOR_CEILING_CPU_PERCENT = 85.0


def generator_ceiling(levels: Sequence[Level]) -> int | None:
    """The population at which this generator would reach 85 % of a core, from its CPU at the levels measured.

    The calibration of capacity.md §6, made from the search's own levels instead of a separate ramp: a
    line through the hold-window CPU of every judged level. None with fewer than 2 levels or a flat line.
    """
    points = [
        (float(level["participants"]), level["generator"]["cpu_percent"])
        for level in levels
        if level["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE", "GENERATOR_BOUND")
    ]
    if len({x for x, _ in points}) < 2:
        return None
    if len(points) >= MIN_OLS_LEVELS:
        line = ols([p[0] for p in points], [p[1] for p in points])
        intercept, slope = line.intercept, line.slope
    else:
        (x0, y0), (x1, y1) = sorted(points)[:2]
        slope = (y1 - y0) / (x1 - x0)
        intercept = y0 - slope * x0
    if slope <= 0:
        return None
    return max(0, int((GENERATOR_CEILING_CPU_PERCENT - intercept) / slope))


def analyse(
    levels: list[Level],
    search: Search,
    slos: list[SloSpec],
    *,
    shape_description: dict[str, object],
    options: dict[str, object],
    server_limit: dict[str, object],
    server_cores: float | None,
    target_cpu: float,
    grow: str,
    confidence: float,
    notes: list[str],
) -> CapacitySection:
    """The report's ``capacity`` section (``summary`` is left for the report layer to write)."""
    lower, upper = search.lower, search.upper
    capacity_level = _level_at(levels, lower)
    stopped = search.stopped_because
    generator_bound = any(level["verdict"] == "GENERATOR_BOUND" for level in levels)
    # Censored: --max passed, the generator saturated, or the search was cut short (the server died, or the
    # search's own driver failed): the capacity is at least the last PASS, and the level above it says
    # nothing about the server's limit.
    censored = upper is None or generator_bound or stopped in ("aborted", "error", "stopped")
    bound = "none" if lower is None else "lower" if censored else "exact"
    measured = _measured(levels)
    cores_fit = _cores_vs_egress(measured)
    cpus = server_limit.get("cpus")
    plan_notes = list(notes)
    if not any(level["server"] is not None and level["server"]["packets_out_per_s"] is not None for level in levels):
        plan_notes.append("the server's /metrics could not be read: verdicts are client-side only, no server model")
    ceiling = generator_ceiling(levels)
    if ceiling is not None and upper is None and lower is not None and ceiling < 2 * lower:
        plan_notes.append(
            f"this generator reaches {GENERATOR_CEILING_CPU_PERCENT:.0f} % of a core near {ceiling} participants of "
            "this shape: a higher --max needs a bigger generator machine"
        )
    section: CapacitySection = {
        "grow": grow,  # type: ignore[typeddict-item]
        "shape": shape_description,
        "slos": slos,
        "confidence": confidence,
        "value": lower,
        "interval": (lower, upper),
        "limiting": "generator" if generator_bound else limiting_of(_level_at(levels, upper)),
        "bound": bound,  # type: ignore[typeddict-item]
        "levels": levels,
        "headroom": _headroom(capacity_level, float(cpus) if isinstance(cpus, int | float) else None),
        "model": {
            "knee_latency": _knee(measured, "join_p95"),
            "knee_ping": _knee(measured, "ping_p99"),
            "knee_cpu": _knee(measured, "server_cores"),
            "cores_vs_egress": cores_fit,
            "usl": _usl(measured),
        },
        "plan": _plan(measured, capacity_level, cores_fit, server_cores, target_cpu, plan_notes),
        "server_limit": server_limit,
        "search": {**options, "levels": len(levels), "stopped": stopped, "generator_ceiling": ceiling},
        "summary": "",
    }
    return section


def sweep_summary(sections: Sequence[CapacitySection]) -> dict[str, object]:
    """A core sweep: capacity against the server's CPU limit, and participants per core at each."""
    rows: list[dict[str, object]] = []
    for section in sections:
        cpus = section["server_limit"].get("cpus")
        value = section["value"]
        rows.append(
            {
                "cpus": cpus,
                "value": value,
                "interval": section["interval"],
                "limiting": section["limiting"],
                "per_cpu": round(value / float(cpus), 1) if value and isinstance(cpus, int | float) and cpus else None,
            }
        )
    points = [(float(r["cpus"]), float(r["value"])) for r in rows if isinstance(r["cpus"], int | float) and r["value"]]  # type: ignore[arg-type]
    out: dict[str, object] = {"rows": rows}
    if len(points) >= MIN_USL_LEVELS:
        model = usl([p[0] for p in points], [p[1] for p in points])
        if model is not None:
            out["usl"] = {"lambda": model.lam, "sigma": model.sigma, "kappa": model.kappa, "r2": model.r2}
    else:
        out["usl"] = {"ok": False, "reason": f"{len(points)} core counts; a USL fit of capacity against cores needs 6"}
    return out
