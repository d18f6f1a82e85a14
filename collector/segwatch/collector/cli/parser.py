"""What ``segwatch`` accepts: the argument parser, one ``_add_<command>`` per sub-command.

Every help text a user sees is here. Argument types (:mod:`.argument_types`)
turn bad input into argparse's own error (usage line, exit 2) before any
command runs; the commands themselves are in :mod:`.commands`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, TypeAlias

from segwatch.clickhouse.queries import ANOMALY_STATES
from segwatch.collector.config.files import CONFIG_ENV, DEFAULT_CONFIG_FILE
from segwatch.collector.service.detect import MAX_RANGE

from .argument_types import cluster_name, duration, moment, positive_int, stage, timestamp

__all__ = ["build_parser", "check_usage", "installed_version"]

SubParsers: TypeAlias = "argparse._SubParsersAction[_Parser]"


def installed_version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare source tree)."""
    try:
        return version("segwatch")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors said in one line (exit 2), as every other
    error of the CLI is: ``segwatch anomalies: error: ... (see segwatch anomalies --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    parser.add_argument("--version", action="version", version=f"segwatch {installed_version()}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for add in (_add_demo, _add_collector, _add_serve, _add_sql, _add_anomalies, _add_report,
                _add_baseline, _add_backfill, _add_validate, _add_explain, _add_detect,
                _add_spool, _add_migrate):  # fmt: skip
        add(commands)
    return parser


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say alone; exits 2 in one line, as its own errors do."""
    if args.command == "migrate" and args.cluster is not None and not args.render:
        parser.error("segwatch migrate --cluster needs --render, which writes the cluster "
                     "form for review: collectors cannot run on the cluster form yet, so "
                     "segwatch migrate does not apply it (docs/clickhouse-server.md, A "
                     "cluster)")  # fmt: skip
    if args.command == "detect":
        _check_detect_range(parser, args)
    if args.command != "spool":
        return
    if args.action == "list" and (args.names or args.all):
        parser.error("segwatch spool list takes no names and no --all (did you mean requeue?)")
    if args.action == "requeue" and bool(args.names) == bool(args.all):
        parser.error("segwatch spool requeue takes dead-letter names (segwatch spool lists "
                     "them) or --all, one or the other")  # fmt: skip


def _add_demo(commands: SubParsers) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a collector and a simulated service, inject drift, find it",
        description="Start a collector on an embedded store, send a simulated service's model "
        "calls through the OTel SDK, inject drift into one segment and run the detectors.",
    )
    demo.add_argument("--data", metavar="DIR", help="store directory (default: a temporary one)")
    demo.add_argument("--json", action="store_true", help="print the anomalies as JSON")


def _add_collector(commands: SubParsers) -> None:
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


def _add_serve(commands: SubParsers) -> None:
    serve = commands.add_parser(
        "serve",
        help="open the embedded store to other processes over ClickHouse's HTTP interface",
        description="Own the config's embedded store (storage.dsn: chdb://DIR), apply its "
        "migrations, and answer ClickHouse's HTTP interface at serve.http.endpoint (default "
        "127.0.0.1:8123) until interrupted: collectors write to it with storage.dsn: "
        "http://HOST:PORT/segwatch, and clickhouse-connect, curl, Grafana and BI tools read it. "
        "With no serve.users it is a fresh ClickHouse server on loopback (user default, no "
        "password); beyond loopback it needs serve.http.tls and serve.users, whose passwords "
        "come from the environment variables their password_env names.",
    )
    _config_argument(serve)


def _add_sql(commands: SubParsers) -> None:
    sql = commands.add_parser(
        "sql",
        help="run a read-only SQL query on the store",
        description="Run a read-only SQL query on the store (through a running collector if "
        "one holds the embedded store). Never creates a store: a DSN naming none is an error.",
    )
    sql.add_argument("query", help='the SQL query, e.g. "SELECT count() FROM ml_model_calls"')
    _config_argument(sql)
    _json_argument(sql)


def _add_anomalies(commands: SubParsers) -> None:
    anomalies = commands.add_parser(
        "anomalies",
        help="list the anomalies the detectors found",
        description="List anomalies by incident (the anomalies that share a cause: one fault), "
        "open incidents first, the most severe and most specific first; in each, its root (the "
        "change that explains the others) first, then its consequences, each saying why it "
        "belongs. Each anomaly's state (open, or resolved once its detector stopped finding it), "
        "when it opened and resolved, and the sentence that explains it. --findings lists what "
        "each detector run found, window by window.",
    )
    anomalies.add_argument(
        "--limit", type=positive_int, default=50,
        help="incidents, each listed whole; with --findings, rows (default 50)",
    )  # fmt: skip
    anomalies.add_argument("--model", help="only this model")
    anomalies.add_argument(
        "--state", choices=ANOMALY_STATES, default="all", help="open, resolved or all (default)"
    )
    anomalies.add_argument(
        "--since",
        type=duration,
        help="only what changed in the last DURATION (e.g. 30m, 24h, 7d; default: any time)",
    )
    anomalies.add_argument(
        "--findings", action="store_true", help="each detector run's findings instead"
    )
    _config_argument(anomalies)
    _json_argument(anomalies)


def _add_report(commands: SubParsers) -> None:
    report = commands.add_parser(
        "report",
        help="write an HTML report to look at: anomalies, drift heat map, distributions",
        description="Write one self-contained HTML file (it loads nothing from the network) "
        "showing, per model, the open and recent anomalies and the latest findings with their "
        "exemplar trace ids, a segment x quantity heat map of drift (PSI) over every segment, "
        "each finding's distribution against its baseline and its time series, volume per "
        "segment and, when labels exist, performance. Needs plotly: "
        'pip install "segwatch[report]". Through a running collector if one holds the store.',
    )
    report.add_argument("--model", help="only this model (default: every model with calls)")
    report.add_argument(
        "--since",
        type=duration,
        default=24 * 3600,
        help="how far back to look (e.g. 30m, 24h, 7d; default 24h)",
    )
    report.add_argument(
        "-o", "--output", metavar="FILE", default="report.html", help="default report.html"
    )
    _config_argument(report)


def _add_baseline(commands: SubParsers) -> None:
    baseline = commands.add_parser(
        "baseline",
        help="load a training set as a baseline profile of a model",
        description="Load a training set (CSV, or parquet with pandas and pyarrow) through the "
        "same segmentation and aggregation as live traffic, as the profile --name of --model. "
        "Loading again replaces the profile. A column is the field the config declares "
        "under its name for --model (a declared output score reads a column score); "
        "output.x, metric.x, feature.x and context.x name their kind; when the model declares "
        "fields, other columns are ignored (and listed), else they are features. NaN and "
        "empty cells are MISSING.",
    )
    baseline.add_argument("file", help="the training set: a .csv or .parquet file")
    baseline.add_argument("--model", required=True, help="the model the profile describes")
    baseline.add_argument("--version", default="", help="its version (default: every version)")
    baseline.add_argument("--name", default="training", help="profile name (default training)")
    _config_argument(baseline)


def _add_backfill(commands: SubParsers) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="load logged predictions as if they had come as spans",
        description="Read a file of logged model calls (CSV, or parquet with pandas and "
        "pyarrow; one row per call, one column per field, one column of times) and write the "
        "aggregates and raw calls the collector would have written had the calls come as "
        "spans at those times: same segments, same config, same limits. Columns map to "
        "fields by the config (a declared output 'score' reads a column 'score'; "
        "output.x, metric.x, feature.x and context.x name their kind; when the model declares "
        "fields, other columns are ignored (and listed), else they are features); an "
        "empty cell is MISSING. Idempotent: running a file again (or again after a crash) "
        "stores it once. Not while a collector holds the embedded store: stop it first.",
    )
    backfill.add_argument("file", help="the logged predictions: a .csv or .parquet file")
    backfill.add_argument("--model", required=True, help="the model that made the calls")
    backfill.add_argument(
        "--timestamp",
        required=True,
        metavar="COLUMN",
        help="the column of call times: ISO 8601 (no zone: UTC) or Unix seconds",
    )
    backfill.add_argument("--version", default="", help="the model version (default none)")
    backfill.add_argument("--stage", default="serving", type=stage,
                          help="the deployment stage (default serving)")  # fmt: skip
    _config_argument(backfill)
    _json_argument(backfill)


def _add_validate(commands: SubParsers) -> None:
    validate = commands.add_parser(
        "validate",
        help="check a config file and list every problem",
        description="Check a config file; exit 0 when valid, 2 with every problem listed.",
    )
    validate.add_argument("file", help="the YAML config to check")
    _json_argument(validate)


def _add_explain(commands: SubParsers) -> None:
    explain = commands.add_parser(
        "explain",
        help="show what a config will track and roughly what it will cost",
        description="Print the models x quantities x segments a config tracks, the estimated "
        "aggregate rows per hour, and the detectors with their cadence.",
    )
    explain.add_argument("file", help="the YAML config to explain")
    _json_argument(explain)


def _add_detect(commands: SubParsers) -> None:
    detect = commands.add_parser(
        "detect",
        help="run the detectors now",
        description="Run every detector once for the windows that ended before --at (now); "
        "or, with --from (and --to, default now), replay history: every detector's every "
        "window that ends in the range, in time order as the scheduler would have run them, "
        "opening and resolving anomalies as it goes (at most 31 days a run).",
    )
    detect.add_argument("--at", type=timestamp, help="ISO time, e.g. 2026-11-26T12:00:00Z")
    detect.add_argument(
        "--from",
        dest="start",
        type=moment,
        metavar="TIME",
        help="replay from TIME: ISO 8601 (e.g. 2026-11-26T12:00:00Z) or relative to now (-2h, -7d)",
    )
    detect.add_argument(
        "--to", dest="end", type=moment, metavar="TIME", help="replay up to TIME (default now)"
    )
    # `--from -2h`: argparse takes what starts with "-" for an option unless it looks like a
    # negative number; a relative time is one here (the command has no option like it).
    detect._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?\s*[smhd]?$")
    _config_argument(detect)
    _json_argument(detect)


def _add_spool(commands: SubParsers) -> None:
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


def _add_migrate(commands: SubParsers) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="bring the store's tables up to date with this version",
        description="Apply the migrations the store lacks, in order, and print their names. "
        "On a server, one runner at a time: a lease kept in the store makes a second run wait "
        "for the first (then find nothing left to do). A collector on an embedded store "
        "migrates it when it starts; on a ClickHouse server, collectors wait until this has "
        "run. A migration that rebuilds a table refuses to run on a server while a collector "
        "still writes that table: stop the older collectors first. The cluster form "
        "(--cluster NAME --render) is written for review only: collectors cannot run on it yet.",
    )
    migrate.add_argument(
        "--cluster",
        metavar="NAME",
        type=cluster_name,
        help="with --render: the migrations' form for the ClickHouse cluster NAME (of the "
        "servers' remote_servers), ON CLUSTER, Replicated tables behind Distributed ones, "
        "written for review; it is not applied, since collectors cannot run on it yet",
    )
    mode = migrate.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL of each pending migration instead, changing nothing",
    )
    mode.add_argument(
        "--render",
        action="store_true",
        help="print the SQL of every migration (with --cluster NAME, its cluster form) "
        "without reaching any store",
    )
    _config_argument(migrate)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"collector YAML config (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG_FILE} if "
        "it exists, else none); relative paths in it are relative to its directory",
    )


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _check_detect_range(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--from and --to: a replay of history, not a run at one moment; a range that ends after
    it starts, within the bound."""
    if args.start is None:
        if args.end is not None:
            parser.error("--to needs --from: the range to replay starts at --from")
        return
    if args.at is not None:
        parser.error("--at runs one moment, --from/--to a range: one or the other")
    end = args.end if args.end is not None else dt.datetime.now(dt.timezone.utc)
    if end <= args.start:
        parser.error(f"--to ({end.isoformat(timespec='seconds')}) must be after --from "
                     f"({args.start.isoformat(timespec='seconds')})")  # fmt: skip
    if end - args.start > MAX_RANGE:
        days = (end - args.start).total_seconds() / 86400
        parser.error(f"--from to --to spans {days:.1f} days, past the {MAX_RANGE.days} days one "
                     "run covers: split the range")  # fmt: skip
    args.end = end
