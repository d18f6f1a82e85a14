"""Running detectors: the manifest, their windows, and writing ``ml_anomalies``.

A detector is one ``.sql`` file plus an entry in ``detectors/manifest.yaml``.
Values reach the SQL only as query parameters; the file name and parameter
names are validated against strict patterns. A run for a window that was
already run adds no duplicate rows.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from clickhouse_connect.driver.client import Client

from .lifecycle import KEY_COLUMNS, Persistence, most_specific, update_lifecycle
from .rollups import FIVE_MINUTES, ONE_HOUR, roll_up

__all__ = [
    "ANOMALY_COLUMNS",
    "DetectorRun",
    "DetectorSpec",
    "ManifestError",
    "load_manifest",
    "parse_duration",
    "run_detector",
    "run_detectors",
]

ANOMALIES_TABLE = "ml_anomalies"
ANOMALY_COLUMNS = (
    *KEY_COLUMNS,  # detector, model, version, stage, segment dimension and value, quantity
    "window_start",
    "window_end",
    "baseline_start",
    "baseline_end",
    "score",
    "threshold",
    "p_value",
    "support",
    "baseline_support",
    "baseline_value",
    "current_value",
    "exemplar_trace_ids",
    "details",
    "statistics",
)
"""The columns every detector returns, in order (the detector contract)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RESERVED = {"detector", "window_start", "window_end", "baseline_start", "baseline_end"}


class ManifestError(ValueError):
    """The detector manifest is invalid; the message lists every problem."""


def parse_duration(text: str) -> int:
    """``15m`` → 900 seconds; ``ValueError`` for anything else."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"duration {text!r} must be a positive number with s, m, h or d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def check_detector_duration(seconds: int) -> int:
    """Detectors read 5-minute roll-ups: their cadence, window and baseline are whole
    multiples of 5 minutes (``ValueError`` otherwise)."""
    if seconds % FIVE_MINUTES.seconds:
        raise ValueError(f"{seconds} s is not a whole number of 5 minutes")
    return seconds


@dataclass(frozen=True)
class DetectorSpec:
    """One manifest entry, validated. Durations in seconds."""

    name: str
    sql: str
    description: str
    cadence: int
    window: int
    baseline: int
    parameters: dict[str, Any] = field(default_factory=dict)
    run_if: str = ""  # a query of one boolean: the detector runs only when it is true
    persistence: Persistence = field(default_factory=Persistence)
    emits: tuple[str, ...] = ()  # the detector names its rows carry, when not just its own
    delay: int = 0  # seconds the window lags the run (labels that need time to arrive)

    @property
    def detectors(self) -> tuple[str, ...]:
        """The names of the detectors this query reports as (its own by default)."""
        return self.emits or (self.name,)

    def windows(self, at: dt.datetime) -> dict[str, dt.datetime]:
        """Window and baseline for a run at ``at``: the window ends at the last cadence boundary."""
        epoch = int(at.timestamp())
        end = epoch - epoch % self.cadence - self.delay
        start = end - self.window
        return {
            "window_start": _utc(start),
            "window_end": _utc(end),
            "baseline_start": _utc(start - self.baseline),
            "baseline_end": _utc(start),
        }


def _utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


def load_manifest(package: str = "segwatch.clickhouse.detectors") -> list[DetectorSpec]:
    """Read and validate ``manifest.yaml`` and the SQL files it names."""
    folder = resources.files(package)
    try:
        document = yaml.safe_load(folder.joinpath("manifest.yaml").read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise ManifestError(f"detectors/manifest.yaml is not valid YAML: {exc}") from exc
    entries = document.get("detectors") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ManifestError("detectors/manifest.yaml must have a list under 'detectors'")
    problems: list[str] = []
    specs: list[DetectorSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"detectors[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}.name: {name!r} must match {_NAME.pattern}")
            continue
        where = f"detectors[{name}]"
        if name in seen:
            problems.append(f"{where}: defined twice")
        seen.add(name)
        unknown = set(entry) - {
            "name",
            "file",
            "description",
            "cadence",
            "window",
            "baseline",
            "parameters",
            "fragments",
            "run_if",
            "persistence",
            "emits",
            "delay",
        }
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        durations: dict[str, int] = {}
        for key in ("cadence", "window", "baseline"):
            try:
                durations[key] = check_detector_duration(parse_duration(entry.get(key, "")))
            except ValueError as exc:
                problems.append(f"{where}.{key}: {exc}")
        delay = 0
        if "delay" in entry:
            try:
                delay = check_detector_duration(parse_duration(entry["delay"]))
            except ValueError as exc:
                problems.append(f"{where}.delay: {exc}")
        file_name = entry.get("file", f"{name}.sql")
        if not isinstance(file_name, str) or not re.match(r"^[a-z0-9_]+\.sql$", file_name):
            problems.append(f"{where}.file: {file_name!r} must be a plain .sql file name")
            continue
        sql_file = folder.joinpath(file_name)
        if not sql_file.is_file():
            problems.append(f"{where}.file: {file_name} does not exist")
            continue
        fragments = entry.get("fragments") or {}
        sql = _with_fragments(sql_file.read_text("utf-8"), fragments, folder, where, problems)
        if sql is None:
            continue
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            problems.append(f"{where}.parameters: must be a mapping")
            continue
        for key, value in parameters.items():
            if not isinstance(key, str) or not _NAME.match(key) or key in _RESERVED:
                problems.append(f"{where}.parameters.{key}: not an allowed parameter name")
            elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
                problems.append(f"{where}.parameters.{key}: must be a number or a string")
        persistence = _persistence(entry.get("persistence"), where, problems)
        emits = entry.get("emits") or []
        if not isinstance(emits, list) or not all(
            isinstance(e, str) and _NAME.match(e) for e in emits
        ):
            problems.append(f"{where}.emits: must be a list of detector names ({_NAME.pattern})")
            emits = []
        for emitted in emits:
            if emitted in seen and emitted != name:
                problems.append(f"{where}.emits: {emitted} is the name of another detector")
            seen.add(emitted)
        if len(durations) == 3 and persistence is not None:
            specs.append(
                DetectorSpec(
                    name=name,
                    sql=sql,
                    run_if=str(entry.get("run_if") or ""),
                    description=str(entry.get("description", "")),
                    parameters=dict(parameters),
                    persistence=persistence,
                    emits=tuple(emits),
                    delay=delay,
                    **durations,
                )
            )
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ManifestError(f"invalid detector manifest:\n{listing}")
    return specs


def _persistence(value: Any, where: str, problems: list[str]) -> Persistence | None:
    """``{found: 2, windows: 3}`` (default: found once opens, one window)."""
    if value is None:
        return Persistence()
    if not isinstance(value, dict) or set(value) - {"found", "windows"}:
        problems.append(f"{where}.persistence: must be a mapping with found and windows")
        return None
    found, windows = value.get("found", 1), value.get("windows", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (found, windows)):
        problems.append(f"{where}.persistence: found and windows must be whole numbers")
        return None
    try:
        return Persistence(found, windows)
    except ValueError as exc:
        problems.append(f"{where}.persistence: {exc}")
        return None


_MARKER = re.compile(r"/\*@([a-z][a-z0-9_]*)\*/")


def _with_fragments(
    sql: str, fragments: Any, folder: Any, where: str, problems: list[str]
) -> str | None:
    """Fill each ``/*@name*/`` marker with the fragment file the manifest names for it."""
    if not isinstance(fragments, dict):
        problems.append(f"{where}.fragments: must be a mapping of marker to file")
        return None
    texts: dict[str, str] = {}
    for name, file_name in fragments.items():
        if not isinstance(file_name, str) or not re.match(r"^[a-z0-9_]+\.sql$", file_name):
            problems.append(f"{where}.fragments.{name}: {file_name!r} must be a .sql file name")
        elif not folder.joinpath(file_name).is_file():
            problems.append(f"{where}.fragments.{name}: {file_name} does not exist")
        else:
            texts[str(name)] = folder.joinpath(file_name).read_text("utf-8")
    markers = set(_MARKER.findall(sql))
    missing, unused = sorted(markers - set(texts)), sorted(set(texts) - markers)
    if missing:
        problems.append(f"{where}: no fragment for marker(s) {', '.join(missing)}")
    if unused:
        problems.append(f"{where}.fragments: no marker for {', '.join(unused)}")
    if missing or unused or len(texts) != len(fragments):
        return None
    return _MARKER.sub(lambda match: texts[match.group(1)], sql)


@dataclass(frozen=True)
class DetectorRun:
    """What one detector run did: its new findings and the anomalies it opened or resolved."""

    detector: str
    window_start: dt.datetime
    window_end: dt.datetime
    new_anomalies: list[dict[str, Any]]
    seconds: float = 0.0
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)


def run_detector(client: Client, spec: DetectorSpec, at: dt.datetime) -> DetectorRun:
    """Run one detector for the window ending before ``at``.

    Stores its new findings (the most specific culprit of each family) in
    ``ml_anomalies`` and the anomalies that open or resolve in
    ``ml_anomaly_events``. Running a window again adds nothing.
    """
    started = time.perf_counter()
    windows = spec.windows(at)
    parameters: dict[str, Any] = {
        **spec.parameters,
        "detector": spec.name,
        **{k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in windows.items()},
    }
    new: list[dict[str, Any]] = []
    if _should_run(client, spec, parameters):  # before rolling up: nothing to read otherwise
        _roll_up_for(client, spec, windows)
        new = _find(client, spec, parameters)
    opened: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    for detector in spec.detectors:
        transitions = update_lifecycle(
            client,
            detector,
            windows["window_start"],
            windows["window_end"],
            spec.cadence,
            spec.persistence,
        )
        opened += transitions[0]
        resolved += transitions[1]
    return DetectorRun(
        spec.name,
        windows["window_start"],
        windows["window_end"],
        new,
        time.perf_counter() - started,
        opened,
        resolved,
    )


def _roll_up_for(client: Client, spec: DetectorSpec, windows: dict[str, dt.datetime]) -> None:
    """Roll up what this run reads and is not rolled up for good yet (see rollups)."""
    if FIVE_MINUTES.table not in spec.sql:
        return  # reads no roll-up (e.g. performance: labelled raw calls)
    start, end = windows["baseline_start"], windows["window_end"]
    ranges = [(start, end)]
    season = int(spec.parameters.get("season", 0) or 0)
    if season:  # metric_shift against the same time `season` seconds earlier
        span = int(spec.parameters.get("span", 0) or 0)
        ranges.append((windows["window_start"] - dt.timedelta(seconds=season + span),
                       end - dt.timedelta(seconds=season - span)))  # fmt: skip
    for first, last in ranges:
        roll_up(client, FIVE_MINUTES, first, last)
    if ONE_HOUR.table in spec.sql:
        roll_up(client, ONE_HOUR, start, windows["baseline_end"])


def _should_run(client: Client, spec: DetectorSpec, parameters: dict[str, Any]) -> bool:
    """False when the spec's ``run_if`` says there is nothing to compare with (e.g. no
    training profile loaded)."""
    if not spec.run_if:
        return True
    used = {k: v for k, v in parameters.items() if "{" + k + ":" in spec.run_if}
    return bool(client.query(spec.run_if, parameters=used).result_rows[0][0])


def _find(client: Client, spec: DetectorSpec, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """The detector's query with these parameters; stores and returns the new findings."""
    result = client.query(spec.sql, parameters=parameters)
    if not result.result_rows:
        return []  # the embedded engine reports no column names for an empty result
    names = list(result.column_names)
    if names != list(ANOMALY_COLUMNS):
        raise ManifestError(
            f"detector {spec.name} returned columns {names}, expected {list(ANOMALY_COLUMNS)}"
        )
    rows = most_specific([dict(zip(names, row, strict=True)) for row in result.result_rows])
    strangers = {row["detector"] for row in rows} - set(spec.detectors)
    if strangers:
        raise ManifestError(f"detector {spec.name} returned rows of {sorted(strangers)}")
    existing = {
        tuple(row)
        for row in client.query(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM {ANOMALIES_TABLE} "
            "WHERE detector IN {detectors:Array(String)} "
            "AND window_start = {window_start:DateTime('UTC')}",
            parameters={
                "detectors": list(spec.detectors),
                "window_start": parameters["window_start"],
            },
        ).result_rows
    }
    new = [row for row in rows if tuple(row[k] for k in KEY_COLUMNS) not in existing]
    if new:
        detected_at = dt.datetime.now(dt.timezone.utc)
        client.insert(
            ANOMALIES_TABLE,
            [[detected_at, *(row[c] for c in ANOMALY_COLUMNS)] for row in new],
            column_names=["detected_at", *ANOMALY_COLUMNS],
        )
    return new


def run_detectors(
    client: Client, at: dt.datetime | None = None, specs: list[DetectorSpec] | None = None
) -> list[DetectorRun]:
    """Run every detector (or ``specs``) once for the windows ending before ``at`` (now)."""
    at = at or dt.datetime.now(dt.timezone.utc)
    chosen = load_manifest() if specs is None else specs  # [] (all disabled) runs none
    return [run_detector(client, spec, at) for spec in chosen]
