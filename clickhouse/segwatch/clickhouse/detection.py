"""Running detectors: the manifest, their windows, and writing ``ml_anomalies``.

A detector is one ``.sql`` file plus an entry in ``detectors/manifest.yaml``.
Values reach the SQL only as query parameters; the file name and parameter
names are validated against strict patterns. A run for a window that was
already run adds no duplicate rows. The manifest is checked with
:mod:`.yaml_schema`, as the collector's config is: every problem at once,
with its YAML path and line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from .incident_repair import unjoined_opened
from .incidents import join_incidents, settle_incidents
from .lifecycle import FINDING_COLUMNS, KEY_COLUMNS, Persistence, most_specific, update_lifecycle
from .rollups import FIVE_MINUTES, RollUpTurns, roll_up_for
from .store import DETECTOR_SETTINGS, detector_query_settings, error_code
from .yaml_schema import ListOf, MapOf, Problems, Record, Scalar, listing, matches, read

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; only annotations use it
    from importlib.resources.abc import Traversable

__all__ = [
    "ANOMALY_COLUMNS",
    "DetectorRun",
    "DetectorSpec",
    "ManifestError",
    "load_manifest",
    "parse_duration",
    "run_detector",
    "run_detector_group",
    "run_detectors",
]

ANOMALIES_TABLE = "ml_anomalies"
ANOMALY_COLUMNS = FINDING_COLUMNS
"""The columns every detector returns, in order (the detector contract)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RESERVED = {"detector", "window_start", "window_end", "baseline_start", "baseline_end"}


class ManifestError(ValueError):
    """The detector manifest is invalid, or a detector's query broke the detector contract.

    For the manifest, ``problems`` lists each problem as ``path (line N): message``
    and the message names the manifest's file; for a query it is empty.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


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
    maps: str = ""  # the roll-up rows whose maps its SQL reads: "window", "all", "" (see _MAPS)

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
    """Read and validate ``manifest.yaml`` and the SQL files it names.

    Raises :class:`ManifestError` listing every problem with the manifest's
    path, the YAML path and the line (``detectors[2].window (line 40): ...``).
    """
    folder = resources.files(package)
    manifest = folder.joinpath("manifest.yaml")
    problems = Problems()
    data = read(manifest.read_text("utf-8"), _MANIFEST, problems)
    specs: list[DetectorSpec] = []
    seen: set[str] = set()  # the names taken so far, the detectors' and what they emit
    for i, entry in enumerate((data or {}).get("detectors", ())):
        spec = _detector_spec(entry, f"detectors[{i}]", folder, seen, problems)
        if spec is not None:
            specs.append(spec)
    if problems.items:
        source = f"invalid detector manifest {manifest}"
        raise ManifestError(listing(source, problems.items), problems.items)
    return specs


def _detector_duration(text: str) -> None:
    check_detector_duration(parse_duration(text))


def _sql_file_name(name: str) -> None:
    if not re.match(r"^[a-z0-9_]+\.sql$", name):
        raise ValueError(f"{name!r} must be a plain .sql file name")


def _parameter_name(name: str) -> None:
    if not _NAME.match(name) or name in _RESERVED:
        raise ValueError(f"{name!r} is not an allowed parameter name ({_NAME.pattern}, not one of "
                         f"{', '.join(sorted(_RESERVED))})")  # fmt: skip


_REQUIRED = ("name", "cadence", "window", "baseline")
_MANIFEST = Record({
    "detectors": ListOf(Record({
        "name": Scalar(str, matches(_NAME)),
        "file": Scalar(str, _sql_file_name),  # default: <name>.sql
        "description": Scalar(str),
        "cadence": Scalar(str, _detector_duration),
        "window": Scalar(str, _detector_duration),
        "baseline": Scalar(str, _detector_duration),
        "delay": Scalar(str, _detector_duration),
        "parameters": MapOf(Scalar((int, float, str)), _parameter_name),
        "fragments": MapOf(Scalar(str, _sql_file_name)),
        "run_if": Scalar(str),
        "persistence": Record({"found": Scalar(int), "windows": Scalar(int)}),
        "emits": ListOf(Scalar(str, matches(_NAME))),
    }, required=_REQUIRED)),
}, required=("detectors",))  # fmt: skip
"""The manifest's shape; what needs the files or other entries is checked after."""


def _detector_spec(
    entry: dict[str, Any], where: str, folder: Traversable, seen: set[str], problems: Problems
) -> DetectorSpec | None:
    """One validated entry as a spec, or None (its problems added)."""
    if "name" not in entry:
        return None  # missing or invalid: the schema said so
    name = entry["name"]
    if name in seen:
        problems.at(f"{where}.name", f"{name} is defined twice")
    seen.add(name)
    for i, emitted in enumerate(entry.get("emits", ())):
        if emitted in seen and emitted != name:
            problems.at(f"{where}.emits[{i}]", f"{emitted} is the name of another detector")
        seen.add(emitted)
    sql = _detector_sql(entry, where, folder, problems)
    persistence = Persistence()
    if "persistence" in entry:
        try:
            persistence = Persistence(**entry["persistence"])
        except ValueError as exc:
            problems.at(f"{where}.persistence", str(exc))
            return None
    if sql is None or any(key not in entry for key in _REQUIRED):
        return None  # a required key missing or invalid: the schema said so
    return DetectorSpec(
        name=name,
        sql=sql,
        run_if=entry.get("run_if", ""),
        description=entry.get("description", ""),
        parameters=entry.get("parameters", {}),
        persistence=persistence,
        emits=tuple(entry.get("emits", ())),
        delay=parse_duration(entry["delay"]) if "delay" in entry else 0,
        maps=max(_MAPS.findall(sql), key=("window", "all").index, default=""),
        **{key: parse_duration(entry[key]) for key in ("cadence", "window", "baseline")},
    )


def _detector_sql(
    entry: dict[str, Any], where: str, folder: Traversable, problems: Problems
) -> str | None:
    """The entry's SQL file, each ``/*@name*/`` marker filled with the fragment named for it."""
    file_name = entry.get("file", f"{entry['name']}.sql")
    if not folder.joinpath(file_name).is_file():
        problems.at(f"{where}.file" if "file" in entry else where, f"{file_name} does not exist")
        return None
    sql = folder.joinpath(file_name).read_text("utf-8")
    fragments: dict[str, str] = entry.get("fragments", {})
    texts: dict[str, str] = {}
    for name, fragment in fragments.items():
        if folder.joinpath(fragment).is_file():
            texts[name] = folder.joinpath(fragment).read_text("utf-8")
        else:
            problems.at(f"{where}.fragments.{name}", f"{fragment} does not exist")
    markers = set(_MARKER.findall(sql))
    missing, unused = sorted(markers - set(texts)), sorted(set(fragments) - markers)
    if missing:
        problems.at(where, f"no fragment for marker(s) {', '.join(missing)} in {file_name}")
    if unused:
        problems.at(f"{where}.fragments", f"no marker for {', '.join(unused)} in {file_name}")
    if missing or unused or len(texts) != len(fragments):
        return None
    return _MARKER.sub(lambda match: texts[match.group(1)], sql)


_MARKER = re.compile(r"/\*@([a-z][a-z0-9_]*)\*/")
_MAPS = re.compile(r"^-- segwatch: reads the roll-ups' maps of (window|all)\b", re.MULTILINE)
"""A detector's SQL (or a fragment of it) saying which roll-up rows it reads histograms
and categories of, beyond the whole model's: the current ``window``'s, or ``all`` (the
baseline's too). The runner rolls the buckets before them up without (see rollups)."""


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
    """Run one detector for the window ending before ``at`` (see :func:`run_detector_group`);
    raises what the run raised."""
    (outcome,) = run_detector_group(client, [spec], at)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def run_detector_group(
    client: Client, specs: Sequence[DetectorSpec], at: dt.datetime, helpers: Sequence[Client] = ()
) -> list[DetectorRun | Exception]:
    """Run each detector of ``specs`` for its window ending before ``at``: a scheduler's turn.

    Each run stores its new findings (the most specific culprit of each family) in
    ``ml_anomalies``, the anomalies that open or resolve in ``ml_anomaly_events``, and
    their incidents in ``ml_incident_members`` (each transition gets ``incident_id``,
    ``incident_role``, ``incident_alert`` and ``incident_summary``: see
    :mod:`.incidents`). The opened include anomalies an earlier run recorded but failed
    before giving them an incident (:func:`~.incident_repair.unjoined_opened`): late,
    not lost. Running a window again adds nothing.

    The runs' queries go out on ``client`` and each of ``helpers`` (other sessions of
    the same store) at once, a detector at a time per session, each query on its share of
    the engine's threads: one detector query keeps about one and a half of this machine's
    two cores busy (its planning, window functions and final steps are one thread), two
    keep both. Roll-ups take turns at each roll-up table (two runs rolling up one bucket
    would both do the work: see :class:`~.rollups.RollUpTurns`), and the incidents are
    joined on ``client``, one detector after another in the order of ``specs``, as a run
    at a time would: an incident's root does not depend on which query finished first.
    A run's incidents are joined as soon as it and the runs before it have been
    evaluated, once ``client`` has no detector left to evaluate: while the helpers
    still evaluate the last ones (joining reads only the incidents the runs before it
    joined, and the raw calls, so when it happens does not change what it records).

    Returns each detector's run, or the exception that stopped it (the others still run).
    A run's ``seconds`` run from its start to its end, waits for the roll-up turn
    included; with helpers the runs overlap and share the cores. What a group stores is
    what the same runs one at a time store, up to the roll-ups' order: a 1-hour bucket is
    rolled up from its 5-minute rows when they are all held, from the minute rows
    otherwise, and which comes first may change its exemplars and the last bits of its
    sums.
    """
    runs = [_GroupRun(spec, spec.windows(at)) for spec in specs]
    work: queue.SimpleQueue[_GroupRun] = queue.SimpleQueue()
    for run in runs:
        work.put(run)
    helpers = helpers[: max(0, len(runs) - 1)]  # a session per run at most
    turn = _Turn(max_threads=_threads_each(client, 1 + len(helpers)) if helpers else None)

    def drain(session: Client) -> None:
        while True:
            try:
                run = work.get_nowait()
            except queue.Empty:
                return
            run.evaluate(session, turn)

    threads: list[threading.Thread] = []
    settled: list[DetectorRun | Exception] = []
    try:
        for i, helper in enumerate(helpers, start=1):
            thread = threading.Thread(
                target=drain, args=(helper,), name=f"segwatch-detect-{i}", daemon=True
            )
            thread.start()
            threads.append(thread)
        drain(client)
        for run in runs:  # every run is evaluated or under way on a helper
            run.evaluated.wait()
            settled.append(run.settle(client))
    finally:  # interrupted: no helper starts another detector; those under way end
        with contextlib.suppress(queue.Empty):
            while True:
                work.get_nowait()
        for thread in threads:
            thread.join()
    return settled


@dataclass(frozen=True)
class _Turn:
    """What the runs of one group share: the turns at the roll-ups, and each query's threads."""

    roll_ups: RollUpTurns = field(default_factory=RollUpTurns)
    max_threads: int | None = None  # a detector query's; None: the engine's own


def _threads_each(client: Client, sessions: int) -> int | None:
    """The engine's threads for one query shared among ``sessions`` queries at once (None
    when it does not say). Two queries of two threads each on two cores spent more CPU on
    their parallel steps and on switching than one thread each: over ten alternated
    scheduled runs of bench/detect.py's store, one each took 11 % less time (medians 2.88
    → 2.57 s) and 14 % less CPU (5.45 → 4.69 CPU-s). A server with more cores keeps more."""
    try:
        threads = int(client.query("SELECT getSetting('max_threads')").result_rows[0][0])
    except (DatabaseError, IndexError, TypeError, ValueError):
        return None
    return max(1, threads // sessions)


@dataclass
class _GroupRun:
    """One detector's run in :func:`run_detector_group`: evaluated on a session of its own
    (its query, lifecycle and unjoined anomalies), then settled (its incidents) in turn."""

    spec: DetectorSpec
    windows: dict[str, dt.datetime]
    new: list[dict[str, Any]] = field(default_factory=list)
    unjoined: list[dict[str, Any]] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # until evaluate() ends: a run whose thread died mid-way (a BaseException) is no success
    error: Exception | None = field(default_factory=lambda: RuntimeError("the run did not end"))
    evaluated: threading.Event = field(default_factory=threading.Event)  # set when it ends

    def evaluate(self, client: Client, turn: _Turn) -> None:
        """Find (unless ``run_if`` says there is nothing to compare with), record what opens
        and resolves, and read the anomalies left without an incident."""
        started = time.perf_counter()
        spec, windows = self.spec, self.windows
        parameters: dict[str, Any] = {
            **spec.parameters,
            "detector": spec.name,
            **{k: v.strftime("%Y-%m-%d %H:%M:%S") for k, v in windows.items()},
        }
        try:
            # run_if before rolling up: with nothing to compare with, nothing to read
            if _should_run(client, spec, parameters):
                self.new = _roll_up_and_find(client, spec, windows, parameters, turn)
            # Read before this window's transitions are recorded, as they are joined after:
            # only anomalies that opened in an earlier window are taken.
            lookback = dt.timedelta(seconds=spec.cadence * spec.persistence.windows)
            self.unjoined = unjoined_opened(client, spec.detectors, windows["window_end"], lookback)
            for detector in spec.detectors:
                opened, resolved = update_lifecycle(
                    client,
                    detector,
                    windows["window_start"],
                    windows["window_end"],
                    spec.cadence,
                    spec.persistence,
                )
                self.opened += opened
                self.resolved += resolved
            self.error = None
        except Exception as exc:  # this detector's run stops here; the others go on
            self.error = exc
        finally:
            self.seconds += time.perf_counter() - started
            self.evaluated.set()

    def settle(self, client: Client) -> DetectorRun | Exception:
        """Join the incidents (the anomalies left without one first, as they opened
        earlier); the run, or the exception that stopped it."""
        if self.error is not None:
            return self.error
        started = time.perf_counter()
        try:
            join_incidents(client, self.unjoined, self.spec.parameters)
            join_incidents(client, self.opened, self.spec.parameters)
            settle_incidents(client, self.resolved)
        except Exception as exc:
            return exc
        return DetectorRun(
            self.spec.name,
            self.windows["window_start"],
            self.windows["window_end"],
            self.new,
            self.seconds + time.perf_counter() - started,
            self.unjoined + self.opened,
            self.resolved,
        )


def _roll_up_and_find(
    client: Client,
    spec: DetectorSpec,
    windows: dict[str, dt.datetime],
    parameters: dict[str, Any],
    turn: _Turn,
) -> list[dict[str, Any]]:
    """Roll up what the run reads (one run of the group at a time per roll-up table),
    then find (see :func:`_find`).

    Another run may roll the same buckets up without their maps between this run's
    roll-up and its query (it read what was held before this run's roll-up landed, and
    its later rows win: see rollups). The query then stops on a row without the maps it
    reads; the buckets are rolled up again, with them, and the query runs once more.
    """
    roll_up_for(client, spec.sql, spec.maps, windows, turn.roll_ups)
    try:
        return _find(client, spec, parameters, turn.max_threads)
    except DatabaseError as exc:
        if not _read_without_maps(exc):
            raise
    # the maps asked for, over the later rows without
    roll_up_for(client, spec.sql, spec.maps, windows, turn.roll_ups)
    return _find(client, spec, parameters, turn.max_threads)


def _read_without_maps(exc: DatabaseError) -> bool:
    """Whether a detector query stopped on a roll-up row without its maps: the
    ``throwIf`` of ``sw_maps_read`` (detectors/rolled_up.sql), by its code and message."""
    return error_code(exc) == _THROW_IF_CODE and _READ_WITHOUT_MAPS in str(exc)


_THROW_IF_CODE = 395  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
_READ_WITHOUT_MAPS = "a roll-up row read without its histogram and categories"
"""The start of ``sw_maps_read``'s message in detectors/rolled_up.sql."""


def _should_run(client: Client, spec: DetectorSpec, parameters: dict[str, Any]) -> bool:
    """False when the spec's ``run_if`` says there is nothing to compare with (e.g. no
    training profile loaded)."""
    if not spec.run_if:
        return True
    used = {k: v for k, v in parameters.items() if "{" + k + ":" in spec.run_if}
    return bool(
        client.query(spec.run_if, parameters=used, settings=DETECTOR_SETTINGS).result_rows[0][0]
    )


def _find(
    client: Client, spec: DetectorSpec, parameters: dict[str, Any], max_threads: int | None = None
) -> list[dict[str, Any]]:
    """The detector's query with these parameters (on ``max_threads`` threads, or the
    engine's own); stores and returns the new findings."""
    settings = detector_query_settings(client)
    if max_threads is not None:
        settings = {**settings, "max_threads": max_threads}
    result = client.query(spec.sql, parameters=parameters, settings=settings)
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
    client: Client,
    at: dt.datetime | None = None,
    specs: list[DetectorSpec] | None = None,
    helpers: Sequence[Client] = (),
) -> list[DetectorRun]:
    """Run every detector (or ``specs``) once for the windows ending before ``at`` (now), as
    one group (:func:`run_detector_group`, on ``client`` and ``helpers``); raises the first
    failure, once the others have run."""
    at = at or dt.datetime.now(dt.timezone.utc)
    chosen = load_manifest() if specs is None else specs  # [] (all disabled) runs none
    outcomes = run_detector_group(client, chosen, at, helpers)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    return cast(list[DetectorRun], outcomes)
