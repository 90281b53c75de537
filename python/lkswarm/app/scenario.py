"""Scenario files (TOML) and the presets shipped in the package.

A scenario file holds `RunConfig` keys at the top level, with friendlier
spellings for durations, plus a name, a description, thresholds and k6-style
stages::

    name = "audio-room"
    description = "10 speakers to N listeners"
    rooms = 1
    participants = 110
    audio_publishers = 10
    rate = 20
    duration = "60s"
    thresholds = ["join_response.p99<500ms", "failed==0"]

    [[stages]]          # optional: they replace rate/duration
    duration = "20s"
    target = 100

Command-line flags override the file key by key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lkswarm.config import RunConfig
from lkswarm.errors import ConfigError
from lkswarm.fields import FieldError
from lkswarm.report.thresholds import parse_thresholds

ALIASES = {
    "duration": "duration_s",
    "reconnect_storm_at": "reconnect_storm_at_s",
    "reconnect_storm_window": "reconnect_storm_window_s",
    "media_connect_timeout": "media_connect_timeout_s",
    "join_timeout": "join_timeout_s",
    # The flags' own names, so that a file takes what `run --help` shows (README: "the same keys as the flags").
    "data_burst_every": "data_burst_every_s",
    "data_slow_pause": "data_slow_pause_s",
    "data_slow_every": "data_slow_every_s",
    "simulate_speakers": "talk_spurts",
}
META_KEYS = ("name", "description", "thresholds")


@dataclass(slots=True)
class Scenario:
    """A parsed scenario: config keys (not yet merged with flags), thresholds and where it came from."""

    name: str = ""
    description: str = ""
    source: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    thresholds: list[str] = field(default_factory=list)


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name in out:
            raise ConfigError(f"both {key!r} and {name!r} are set; keep one")
        if name == "stages" and isinstance(value, list):
            out[name] = [
                {ALIASES.get(k, k): v for k, v in stage.items()} if isinstance(stage, dict) else stage
                for stage in value
            ]
        else:
            out[name] = value
    return out


def first_error(exc: FieldError) -> str:
    """``key.path: message`` of a field's error, with our aliases spelled as the file spells them; the message
    alone for a rule across fields (which named a "scenario" even where the options came from flags alone)."""
    reverse = {v: k for k, v in ALIASES.items()}
    where = ".".join(reverse.get(str(x), str(x)) for x in exc.loc)
    return f"{where}: {exc.msg}" if where else exc.msg


def parse_scenario(text: str, source: str) -> Scenario:
    """Parses and validates TOML scenario text; errors name the file and the line or key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = " (scenario files are TOML, not YAML or JSON)" if source.endswith((".yaml", ".yml", ".json")) else ""
        raise ConfigError(f"{source}: invalid TOML{hint}: {exc}") from None
    scenario = Scenario(source=source)
    name = data.pop("name", "")
    description = data.pop("description", "")
    thresholds = data.pop("thresholds", [])
    if not isinstance(name, str) or not isinstance(description, str):
        raise ConfigError(f"{source}: name and description must be strings")
    if not isinstance(thresholds, list) or not all(isinstance(t, str) for t in thresholds):
        raise ConfigError(f'{source}: thresholds must be a list of strings like ["failed==0"]')
    scenario.name, scenario.description, scenario.thresholds = name, description, thresholds
    try:
        parse_thresholds(thresholds)  # here, so that a bad one names this file
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        scenario.fields = _normalise(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        RunConfig.from_mapping(scenario.fields)  # validate the file on its own, so errors name its keys
    except FieldError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from None
    return scenario


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; say where the file stops being it
        raise ConfigError(f"scenario {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return parse_scenario(text, str(path))


def _preset_files() -> dict[str, Any]:
    folder = resources.files("lkswarm.app") / "presets"
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir() if p.name.endswith(".toml")}


def preset_names() -> list[str]:
    return sorted(_preset_files())


def load_preset(name: str) -> Scenario:
    files = _preset_files()
    if name not in files:
        raise ConfigError(f"unknown preset {name!r}; `lkswarm presets` lists them: {', '.join(sorted(files))}")
    return parse_scenario(files[name].read_text(), f"preset {name}")


def merge_flags(base: Scenario, flags: dict[str, Any]) -> dict[str, Any]:
    """The configuration's fields: a scenario's keys with the command line's flags over them (None: not given)."""
    flags = dict(flags)
    if "reconnect_storm_at_s" in base.fields or flags.get("reconnect_storm_at_s") is not None:
        resume = flags.get("resume_on_disconnect")
        flags["resume_on_disconnect"] = True if resume is None else resume  # a storm is meant to be resumed from
    fields = {**base.fields, **{k: v for k, v in flags.items() if v is not None}}
    if base.fields.get("stages") and any(flags.get(k) is not None for k in ("rate", "duration_s", "participants")):
        fields.pop("stages")  # explicit load-shape flags replace the file's stages
    return fields


def stages_replaced_note(base: Scenario, flags: dict[str, Any]) -> str | None:
    """What to tell the user when a load-shape flag replaced the file's ``[[stages]]`` (silently, it read as if
    the stages had run): the flags that did it and what runs instead."""
    stages = base.fields.get("stages")
    given = [f"--{k.removesuffix('_s')}" for k in ("rate", "duration_s", "participants") if flags.get(k) is not None]
    if not stages or not given:
        return None
    return (
        f"{' and '.join(given)} replace{'s' if len(given) == 1 else ''} the scenario's {len(stages)} stage(s): "
        "a flat run at the flags' load instead (drop the flag to run the stages)"
    )


def scenario_config(scenario: Path | None, preset: str | None, flags: dict[str, Any]) -> tuple[Scenario, RunConfig]:
    """The base scenario (a file, a preset or none) and the config of it with ``flags`` over its keys.

    Raises ConfigError (both a file and a preset) or FieldError (a bad value)."""
    if scenario is not None and preset is not None:
        raise ConfigError("give a scenario file or --preset, not both")
    base = load_scenario(scenario) if scenario is not None else load_preset(preset) if preset else Scenario()
    return base, RunConfig.from_mapping(merge_flags(base, flags))


def _duration_text(seconds: float) -> str:
    """``90`` → ``1m30s``, ``5400`` → ``1h30m``, ``0.5`` → ``0.5s`` (the form `parse_duration_s` reads back)."""
    if seconds < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, rest = divmod(rest, 60)
    return "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (rest, "s")) if value)


def load_summary(config: RunConfig) -> str:
    """What a scenario loads, in one line for `lkswarm presets`: rooms and seats, who publishes what, how
    participants arrive and for how long (the description says why; this says how big)."""
    rooms = f"{config.rooms} room{'s' if config.rooms > 1 else ''}"
    seats = f"{rooms} × {config.participants}"
    if config.stages:
        peak = max(stage.target for stage in config.stages)
        seats = f"up to {peak} live over {rooms}, in {len(config.stages)} stages"
    kinds = [
        f"{count} {what}"
        for count, what in (
            (config.audio_publishers, "audio"),
            (config.video_publishers, "video" + (" simulcast" if config.simulcast else "")),
            (config.data_publishers, "data"),
            (config.data_tracks, "data-track"),
        )
        if count
    ]
    publishing = f"; publishers per room: {', '.join(kinds)}" if kinds else ""
    signal = "; signal only" if config.signal_only else ""
    extras = [f"churn {config.churn_rate:g}/s"] if config.churn_rate else []
    if config.reconnect_storm_at_s is not None:
        extras.append(f"reconnect storm at {_duration_text(config.reconnect_storm_at_s)}")
    # Stages move the population themselves: the join rate is theirs, not `rate`'s.
    pace = (f"{config.rate:g} joins/s, " if not config.stages else "") + _duration_text(config.duration_s)
    return f"{seats}{publishing}{signal}; {', '.join([pace, *extras])}"
