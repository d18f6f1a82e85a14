"""What each ``segwatch`` command does, one handler each: ``handler(args) -> exit code``.

A handler raises what it cannot do (:class:`ConfigError`, a store or API
error, ``ValueError``); :func:`~.main.main` turns that into one line on stderr
and the exit code. Heavy imports (the OTel SDK for ``demo``, the collector's
pipeline for ``collector``) wait inside the handler that needs them, so the
other commands start quickly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from segwatch.clickhouse.migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
    pending_migrations,
)
from segwatch.clickhouse.queries import AnomalyFilter, QueryResult
from segwatch.clickhouse.sql_text import split_statements
from segwatch.clickhouse.store import StoreNotFoundError, parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import configured_detectors
from segwatch.collector.config.files import CONFIG_ENV, DEFAULT_CONFIG_FILE, find_config
from segwatch.collector.config.load import ConfigError, load_config
from segwatch.collector.service.discovery import read_discovery

from .access import (
    ApiAccess,
    DirectAccess,
    StoreAccess,
    describe_store,
    open_access,
    open_for_migration,
)
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .output import print_table, progress_bar

if TYPE_CHECKING:
    from segwatch.collector.durable.dead_letters import DeadLetters

__all__ = ["HANDLERS", "Handler"]

Handler = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.data, as_json=args.json)


def _collector(args: argparse.Namespace) -> int:
    from .collector_process import run_collector

    return run_collector(_config(args, start="collector")[1])


def _serve(args: argparse.Namespace) -> int:
    from .collector_process import run_server

    return run_server(_config(args, start="serve")[1])


def _sql(args: argparse.Namespace) -> int:
    with _open_store(*_config(args)) as access:
        print_table(access.sql(args.query), sys.stdout, args.json)
    return EXIT_OK


def _anomalies(args: argparse.Namespace) -> int:
    selection = AnomalyFilter(args.limit, args.model, args.state, args.since, args.findings)
    with _open_store(*_config(args)) as access:
        listed = access.anomalies(selection)
    print_table(listed if args.json else _indented(listed), sys.stdout, args.json)
    return EXIT_OK


def _indented(listed: QueryResult) -> QueryResult:
    """For people: each consequence drawn under its incident's root (``└ consequence``)."""
    if "role" not in listed.columns:
        return listed  # --findings: no incidents
    role = listed.columns.index("role")
    rows = [[*row[:role], "└ consequence" if row[role] == "consequence" else row[role],
             *row[role + 1:]] for row in listed.rows]  # fmt: skip
    return QueryResult(listed.columns, rows)


def _detect(args: argparse.Namespace) -> int:
    if args.start is not None:  # a replay of history (parser.check_usage set args.end)
        from .backfill import run_detect_range

        with _open_store(*_config(args)) as access, progress_bar("windows") as progress:
            run_detect_range(access, args.start, args.end, args.json, progress)
        return EXIT_OK
    with _open_store(*_config(args)) as access:
        result = access.detect(args.at)
    print_table(result, sys.stdout, args.json)
    if not args.json:  # --json has the same in its "runs"
        print("\n" + "\n".join(result.summary()))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from segwatch.collector.report import PlotlyMissingError

    from .report import check_output, check_report_extra, report_page, report_request, write_page

    try:
        request = report_request(args.model, args.since)
    except ValueError as exc:  # bad usage: argparse's own code
        print(f"segwatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_report_extra()  # before any store is opened
    except PlotlyMissingError as exc:
        print(f"segwatch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    check_output(args.output)  # before the page is made
    config_path, config = _config(args)
    with _open_store(config_path, config) as access:
        page = report_page(access, config, request)
    write_page(page, args.output)
    size = len(page.encode()) / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB): open it in a browser; it needs no network")
    return EXIT_OK


def _baseline(args: argparse.Namespace) -> int:
    from segwatch.collector.profile.profiles import profile_columns, table_columns

    config_path, config = _config(args)
    if not os.path.isfile(args.file):
        raise ValueError(f"{args.file}: no such file")
    # Refused before any store is opened when no column is a field the config declares.
    columns = profile_columns(table_columns(args.file), args.model, config)
    # Only `baseline` may make a store (a profile loaded before the first collector).
    store = _open_store(config_path, config, create=True)
    with store as access, progress_bar("rows") as progress:
        if isinstance(access, DirectAccess):  # through a collector, the upload is one request
            access.progress = progress
        rows = access.load_baseline(args.file, args.model, args.version, args.name)
    print(
        f"loaded {rows} rows of {args.file} as profile {args.name!r} of model "
        f"{args.model!r}" + (f" version {args.version!r}" if args.version else "")
    )
    print(columns.describe())
    return EXIT_OK


def _backfill(args: argparse.Namespace) -> int:
    from .backfill import print_backfill, run_backfill

    config_path, config = _config(args)
    if not os.path.isfile(args.file):
        raise ValueError(f"{args.file}: no such file")
    store = _open_store(config_path, config, create=True)  # history may come before traffic
    with store as access, progress_bar("rows") as progress:
        result = run_backfill(access, args.file, model=args.model, timestamp=args.timestamp,
                              version=args.version, stage=args.stage, config=config,
                              progress=progress)  # fmt: skip
    print_backfill(result, args.file, args.model, config, args.json)
    return EXIT_OK


def _config(
    args: argparse.Namespace, start: str | None = None
) -> tuple[str | None, CollectorConfig]:
    """The config file a command reads (``--config``, ``$SEGWATCH_CONFIG``, ...) and its
    contents; ``(None, defaults)`` when there is none. ``start``: the service the command
    starts, whose start-up checks run first (a refusal is exit 2, as ``validate`` says)."""
    config_path = find_config(args.config)
    return config_path, load_config(config_path, start=start)


@contextmanager
def _open_store(
    config_path: str | None, config: CollectorConfig, create: bool = False
) -> Iterator[StoreAccess]:
    """The config's store, named on a stderr line of its own, closed after the command.

    Readers (``create=False``) never create a store: one that is not there
    would answer about nothing.
    """
    try:
        access = open_access(config.storage.dsn, configured_detectors(config), config,
                             create=create)  # fmt: skip
    except StoreNotFoundError as exc:
        raise StoreNotFoundError(f"{exc} ({_dsn_origin(config_path)})") from exc
    print(f"segwatch: store {access.store}", file=sys.stderr, flush=True)
    try:
        yield access
    finally:
        access.close()


def _dsn_origin(config_path: str | None) -> str:
    """Where the DSN that named no store came from, so the user knows what to fix."""
    if config_path is not None:
        return f"storage.dsn of {config_path}"
    return (f"the default storage.dsn: no --config, ${CONFIG_ENV} or ./{DEFAULT_CONFIG_FILE} "
            "names another")  # fmt: skip


def _validate(args: argparse.Namespace) -> int:
    path, as_json = args.file, args.json
    try:
        config = load_config(path, start="validate")  # and what a service refuses at start
    except ConfigError as exc:
        if as_json:
            print(json.dumps({"file": path, "valid": False, "problems": exc.problems}))
        else:
            print(f"segwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        print(json.dumps({"file": path, "valid": True, "problems": []}))
    else:
        counts = ", ".join(
            f"{n} {one if n == 1 else many}"
            for n, one, many in (
                (len(config.models), "model", "models"),
                (len(config.contexts), "context", "contexts"),
                (len(config.baselines), "baseline", "baselines"),
                (len(config.expected_biases), "expected bias", "expected biases"),
            )
        )
        print(f"{path}: valid ({counts})")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from .explain import baseline_table, detector_table, explain_models

    config = load_config(args.file)
    models, detectors = explain_models(config), detector_table(config)
    baselines = baseline_table(config)
    if args.json:
        print(json.dumps({"models": models.to_json(), "detectors": detectors.to_json(),
                          "baselines": baselines.to_json()}))  # fmt: skip
        return EXIT_OK
    print(f"{args.file}: store {config.storage.dsn}, OTLP/gRPC on {config.receiver.endpoint}\n")
    print_table(models, sys.stdout)
    print(
        "\nModels not declared here are monitored too, with inferred types and default "
        f"segments (top {config.segments.top_k} categories, log decades), compared with "
        "the training profile once one is loaded.\n"
    )
    print_table(detectors, sys.stdout)
    if baselines.rows:
        print("\nThe profile psi_drift_training compares each model with (loaded with segwatch "
              "baseline --name PROFILE; explain reads no store: a model whose profile is not "
              "loaded gets no training comparison):\n")  # fmt: skip
        print_table(baselines, sys.stdout)
    return EXIT_OK


def _spool(args: argparse.Namespace) -> int:
    from segwatch.collector.durable.spool_admin import dead_letters

    config = _config(args)[1]
    letters = dead_letters(config)  # ValueError when the config has no spool
    if args.action == "requeue":
        return _requeue(config, letters, args.names, args.all)
    listed = letters.list()
    rows = [[letter.name, _utc(letter.failed_at), letter.calls, letter.reason]
            for letter in listed]  # fmt: skip
    print_table(QueryResult(["name", "failed_at", "calls", "reason"], rows), sys.stdout, args.json)
    return EXIT_OK


def _requeue(config: CollectorConfig, letters: DeadLetters, names: list[str], every: bool) -> int:
    """Through the running collector, which holds the spool; else into it for the next start."""
    from segwatch.collector.durable.spool_admin import requeue_dead_letters

    if every:
        names = [letter.name for letter in letters.list()]
    if not names:
        print("no dead letters to requeue")
        return EXIT_OK
    info = read_discovery(parse_dsn(config.storage.dsn))
    access = open_access(config.storage.dsn, config=config, create=False) if info else None
    if isinstance(access, ApiAccess):
        calls, where = access.requeue(names), "through the running collector"
    else:  # none runs (or it just stopped)
        if access is not None:
            access.close()
        calls, where = requeue_dead_letters(config, names), "for the next start"
    print(f"requeued {len(names)} dead letter(s), {calls} model calls, {where}")
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    """Apply what the store lacks (or print its SQL); a store a collector holds is refused.

    ``--cluster`` comes with ``--render`` only (:func:`~.parser.check_usage`):
    the cluster form is written for review, never applied, while collectors
    cannot run on it.
    """
    config_path, config = _config(args)
    migrations = load_migrations()
    if args.render:
        if args.cluster is not None:
            from segwatch.clickhouse.cluster import render_cluster_migrations

            migrations = render_cluster_migrations(migrations, args.cluster)
        _print_migrations(migrations)
        return EXIT_OK
    location = parse_dsn(config.storage.dsn)
    try:
        client = open_for_migration(location, create=not args.dry_run)
    except StoreNotFoundError as exc:
        if not args.dry_run:
            raise
        print(f"segwatch: {exc} ({_dsn_origin(config_path)}): every migration is pending",
              file=sys.stderr)  # fmt: skip
        _print_migrations(migrations)
        return EXIT_OK
    print(f"segwatch: store {describe_store(location)}", file=sys.stderr, flush=True)
    try:
        if args.dry_run:
            _print_migrations(pending_migrations(client, migrations))
            return EXIT_OK
        # Embedded: locked by this process, so no lease and no one else writing. A server:
        # other runners (the lease) and collectors (the rebuild guard) may reach it.
        applied = apply_migrations(client, migrations, exclusive=location.embedded)
    except MigrationError as exc:
        print(f"segwatch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print("\n".join(f"applied {name}" for name in applied) or "the store is up to date")
    return EXIT_OK


def _print_migrations(migrations: list[Migration]) -> None:
    """Each migration's statements as they would run, under a ``-- NNNN_name.sql`` line."""
    if not migrations:
        print("the store is up to date")
    for number, migration in enumerate(migrations):
        statements = "".join(f"{statement};\n" for statement in split_statements(migration.sql))
        print(("\n" if number else "") + f"-- {migration.name}\n{statements}", end="")


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


HANDLERS: dict[str, Handler] = {
    "demo": _demo,
    "collector": _collector,
    "serve": _serve,
    "sql": _sql,
    "anomalies": _anomalies,
    "report": _report,
    "baseline": _baseline,
    "backfill": _backfill,
    "validate": _validate,
    "explain": _explain,
    "detect": _detect,
    "spool": _spool,
    "migrate": _migrate,
}
"""The handler of each sub-command :mod:`.parser` defines."""
