"""The ``segwatch`` command line.

Exit codes: 0 success, 1 the command failed (store unreachable, query error),
2 bad usage or bad configuration. Errors are one line on stderr. A command
that reads or writes a store first says which one, on a stderr line of its own
(``segwatch: store chdb:///srv/segwatch-data (through the collector at ...)``).

The config file: ``--config``, else ``$SEGWATCH_CONFIG``, else
``./segwatch.yaml`` if it exists, else none (:mod:`.config_files`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from clickhouse_connect.driver.exceptions import ClickHouseError

from segwatch.clickhouse.detection import parse_duration
from segwatch.clickhouse.queries import ANOMALY_STATES, AnomalyFilter, QueryResult
from segwatch.clickhouse.store import StoreError, StoreNotFoundError, parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.detector_specs import configured_detectors
from segwatch.collector.config.files import CONFIG_ENV, DEFAULT_CONFIG_FILE, find_config
from segwatch.collector.config.load import ConfigError, load_config
from segwatch.collector.service.discovery import read_discovery
from segwatch.collector.service.logs import JsonLogFormatter

from .access import ApiAccess, ApiError, DirectAccess, open_access
from .output import print_table

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SPOOLED = 75
"""``segwatch collector`` stopped with acknowledged calls still in the spool (sysexits'
EX_TEMPFAIL): the store did not take them; the next start flushes them."""
SHUTDOWN_SECONDS = 30.0
"""SIGTERM ends the collector within this time, whatever the store or a query does."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segwatch",
        description="Per-segment monitoring of ML models on OpenTelemetry and ClickHouse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("SEGWATCH_LOG_FORMAT", "text"),
        help="log lines as text, or as one JSON object each (for log pipelines); "
        "default: $SEGWATCH_LOG_FORMAT or text",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run a collector and a simulated service, inject drift, find it",
        description="Start a collector on an embedded store, send a simulated service's model "
        "calls through the OTel SDK, inject drift into one segment and run the detectors.",
    )
    demo.add_argument("--data", metavar="DIR", help="store directory (default: a temporary one)")
    demo.add_argument("--json", action="store_true", help="print the anomalies as JSON")

    collector = commands.add_parser(
        "collector",
        help="run the collector (OTLP/gRPC receiver, aggregation, detectors)",
        description="Run the collector until interrupted (SIGINT or SIGTERM: it stops taking "
        "data, cancels running queries, flushes what it acknowledged and exits within 30 s: 0 "
        "when everything acknowledged is in the store, 75 when some of it waits in the spool "
        "for the next start). Secrets come from the environment, "
        "never from files or arguments: SEGWATCH_RECEIVER_TOKEN, the bearer token OTLP clients "
        "must send; SEGWATCH_API_TOKEN, the local API's token (unset: a random one per start, "
        "which the CLI reads from segwatch-collector.json, mode 0600, in the store directory; "
        "required when the API is bound beyond loopback). Probes and metrics: GET /healthz, "
        "/readyz, /metrics on the API's address, without a token.",
    )
    _config_argument(collector)

    sql = commands.add_parser(
        "sql",
        help="run a read-only SQL query on the store",
        description="Run a read-only SQL query on the store (through a running collector if "
        "one holds the embedded store). Never creates a store: a DSN naming none is an error.",
    )
    sql.add_argument("query", help='the SQL query, e.g. "SELECT count() FROM ml_model_calls"')
    _config_argument(sql)
    _json_argument(sql)

    anomalies = commands.add_parser(
        "anomalies",
        help="list the anomalies the detectors found",
        description="List anomalies, latest change first: each one's state (open, or resolved "
        "once its detector stopped finding it), when it opened and resolved, and the sentence "
        "that explains it. --findings lists what each detector run found, window by window.",
    )
    anomalies.add_argument("--limit", type=_positive_int, default=50, help="rows (default 50)")
    anomalies.add_argument("--model", help="only this model")
    anomalies.add_argument(
        "--state", choices=ANOMALY_STATES, default="all", help="open, resolved or all (default)"
    )
    anomalies.add_argument(
        "--since", type=_duration, help="only what changed in the last DURATION (e.g. 30m, 24h, 7d)"
    )
    anomalies.add_argument(
        "--findings", action="store_true", help="each detector run's findings instead"
    )
    _config_argument(anomalies)
    _json_argument(anomalies)

    baseline = commands.add_parser(
        "baseline",
        help="load a training set as a baseline profile of a model",
        description="Load a training set (CSV, or parquet with pandas and pyarrow) through the "
        "same segmentation and aggregation as live traffic, as the profile --name of --model. "
        "Loading again replaces the profile. Columns output.* and metric.* are outputs and "
        "metrics; the others are features.",
    )
    baseline.add_argument("file", help="the training set: a .csv or .parquet file")
    baseline.add_argument("--model", required=True, help="the model the profile describes")
    baseline.add_argument("--version", default="", help="its version (default: every version)")
    baseline.add_argument("--name", default="training", help="profile name (default training)")
    _config_argument(baseline)

    validate = commands.add_parser(
        "validate",
        help="check a config file and list every problem",
        description="Check a config file; exit 0 when valid, 2 with every problem listed.",
    )
    validate.add_argument("file", help="the YAML config to check")
    _json_argument(validate)

    explain = commands.add_parser(
        "explain",
        help="show what a config will track and roughly what it will cost",
        description="Print the models x quantities x segments a config tracks, the estimated "
        "aggregate rows per hour, and the detectors with their cadence.",
    )
    explain.add_argument("file", help="the YAML config to explain")
    _json_argument(explain)

    detect = commands.add_parser(
        "detect",
        help="run the detectors now",
        description="Run every detector once for the windows that ended before --at (now).",
    )
    detect.add_argument("--at", type=_timestamp, help="ISO time, e.g. 2026-11-26T12:00:00Z")
    _config_argument(detect)
    _json_argument(detect)

    spool = commands.add_parser(
        "spool",
        help="list the spool's dead letters, or send them back",
        description="A flush that keeps failing while the store answers (the store refuses "
        "its data, or aggregating it raised) is set aside as a dead letter after "
        "storage.spool.max_flush_attempts tries, so that it cannot stop ingestion. "
        "'segwatch spool' lists them; 'segwatch spool requeue NAME...' (or --all) sends them "
        "back once the cause is fixed: through the running collector, or into the spool for "
        "the next start. They are flushed under their original token: stored once.",
    )
    spool.add_argument("action", nargs="?", choices=("list", "requeue"), default="list",
                       help="list (default) or requeue")  # fmt: skip
    spool.add_argument("names", nargs="*", metavar="NAME", help="dead letters to requeue")
    spool.add_argument("--all", action="store_true", help="requeue every dead letter")
    _config_argument(spool)
    _json_argument(spool)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"collector YAML config (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG_FILE} if "
        "it exists, else none); relative paths in it are relative to its directory",
    )


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 10000")
    return value


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


# The embedded engine's allocator (the jemalloc inside chdb) keeps freed pages
# for seconds; handing them back after one second kept the collector's peak RSS
# 20-100 MiB lower under load (bench/ingest.py) at no measured cost. It is read
# when chdb loads, so it is set before any store is opened; a value set wins.
EMBEDDED_ALLOCATOR = ("JE_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(*EMBEDDED_ALLOCATOR)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "spool":
        _check_spool_usage(parser, args)
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose
        else logging.INFO
        if args.command == "collector"
        else logging.WARNING,
        handlers=[handler],
    )
    if not args.verbose:
        # The one-line error says what failed; the drivers' retry chatter does not help.
        for noisy in ("urllib3", "clickhouse_connect"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.data, as_json=args.json)
        if args.command == "validate":
            return _validate(args.file, args.json)
        if args.command == "explain":
            return _explain(args.file, args.json)
        config_path = find_config(args.config)
        config = load_config(config_path)
        if args.command == "collector":
            return _run_collector(config)
        if args.command == "spool":
            return _spool(config, args.action, args.names, args.all, args.json)
        if args.command == "baseline" and not os.path.isfile(args.file):
            raise ValueError(f"{args.file}: no such file")
        try:
            # Only `baseline` may make a store (a profile loaded before the first collector);
            # reading commands on a store that is not there would answer about nothing.
            access = open_access(config.storage.dsn, configured_detectors(config), config,
                                 create=args.command == "baseline")  # fmt: skip
        except StoreNotFoundError as exc:
            raise StoreNotFoundError(f"{exc} ({_dsn_origin(config_path)})") from exc
        print(f"segwatch: store {access.store}", file=sys.stderr, flush=True)
        try:
            if args.command == "sql":
                print_table(access.sql(args.query), sys.stdout, args.json)
            elif args.command == "anomalies":
                selection = AnomalyFilter(args.limit, args.model, args.state, args.since,
                                          args.findings)  # fmt: skip
                print_table(access.anomalies(selection), sys.stdout, args.json)
            elif args.command == "detect":
                print_table(access.detect(args.at), sys.stdout, args.json)
            elif args.command == "baseline":
                if isinstance(access, DirectAccess):
                    access.progress = _progress_bar
                rows = access.load_baseline(args.file, args.model, args.version, args.name)
                print(
                    f"loaded {rows} rows of {args.file} as profile {args.name!r} of model "
                    f"{args.model!r}" + (f" version {args.version!r}" if args.version else "")
                )
        finally:
            access.close()
        return EXIT_OK
    except ConfigError as exc:
        print(f"segwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, ApiError, ClickHouseError, OSError, ValueError) as exc:
        print(f"segwatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dsn_origin(config_path: str | None) -> str:
    """Where the DSN that named no store came from, so the user knows what to fix."""
    if config_path is not None:
        return f"storage.dsn of {config_path}"
    return (f"the default storage.dsn: no --config, ${CONFIG_ENV} or ./{DEFAULT_CONFIG_FILE} "
            "names another")  # fmt: skip


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} rows", end=end,
          file=sys.stderr, flush=True)  # fmt: skip


def _validate(path: str, as_json: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        if as_json:
            print(json.dumps({"file": path, "valid": False, "problems": exc.problems}))
        else:
            print(f"segwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        print(json.dumps({"file": path, "valid": True, "problems": []}))
    else:
        print(
            f"{path}: valid ({len(config.models)} models, {len(config.contexts)} contexts, "
            f"{len(config.baselines)} baselines, {len(config.expected_biases)} expected biases)"
        )
    return EXIT_OK


def _explain(path: str, as_json: bool) -> int:
    from .explain import detector_table, explain_models

    config = load_config(path)
    models, detectors = explain_models(config), detector_table(config)
    if as_json:
        print(json.dumps({"models": models.to_json(), "detectors": detectors.to_json()}))
        return EXIT_OK
    print(f"{path}: store {config.storage.dsn}, OTLP/gRPC on {config.receiver.endpoint}\n")
    print_table(models, sys.stdout)
    print(
        "\nModels not declared here are monitored too, with inferred types and default "
        f"segments (top {config.segments.top_k} categories, log decades).\n"
    )
    print_table(detectors, sys.stdout)
    return EXIT_OK


def _check_spool_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad usage of ``segwatch spool`` exits 2 with the usage line, as argparse's own errors."""
    if args.action == "list" and (args.names or args.all):
        parser.error("segwatch spool list takes no names and no --all (did you mean requeue?)")
    if args.action == "requeue" and bool(args.names) == bool(args.all):
        parser.error("segwatch spool requeue takes dead-letter names (segwatch spool lists "
                     "them) or --all, one or the other")  # fmt: skip


def _spool(
    config: CollectorConfig, action: str, names: list[str], every: bool, as_json: bool
) -> int:
    from segwatch.collector.durable.spool_admin import dead_letters, requeue_dead_letters

    letters = dead_letters(config)
    if action == "list":
        listed = letters.list()
        rows = [[letter.name, _utc(letter.failed_at), letter.calls, letter.reason]
                for letter in listed]  # fmt: skip
        print_table(
            QueryResult(["name", "failed_at", "calls", "reason"], rows), sys.stdout, as_json
        )
        return EXIT_OK
    if every:
        names = [letter.name for letter in letters.list()]
    if not names:
        print("no dead letters to requeue")
        return EXIT_OK
    info = read_discovery(parse_dsn(config.storage.dsn))
    access = open_access(config.storage.dsn, config=config, create=False) if info else None
    if isinstance(access, ApiAccess):  # the running collector holds the spool: it takes them
        calls, where = access.requeue(names), "through the running collector"
    else:  # none runs (or it just stopped): into its spool, for the next start
        if access is not None:
            access.close()
        calls, where = requeue_dead_letters(config, names), "for the next start"
    print(f"requeued {len(names)} dead letter(s), {calls} model calls, {where}")
    return EXIT_OK


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run_collector(config: CollectorConfig) -> int:
    from segwatch.collector.service.collector import Collector

    collector = Collector(config)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            # The bound, whatever the process is doing: a long replay at start, a store
            # that does not answer, a query that will not end.
            watchdog = threading.Timer(SHUTDOWN_SECONDS, _give_up, (SHUTDOWN_SECONDS,))
            watchdog.daemon = True
            watchdog.start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    collector.start()
    stop.wait()
    # 0 if every acknowledged call is stored, else EXIT_SPOOLED: the rest waits in the spool.
    return EXIT_SPOOLED if collector.shutdown() else EXIT_OK


def _give_up(seconds: float) -> NoReturn:
    """End the process now: what was acknowledged and not stored is safe in the spool."""
    logging.getLogger(__name__).error(
        "the collector did not stop within %.0f s: exiting; acknowledged calls not yet "
        "stored stay in the spool for the next start",
        seconds,
    )
    logging.shutdown()
    os._exit(EXIT_SPOOLED)
