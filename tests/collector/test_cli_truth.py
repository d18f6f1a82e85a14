"""The CLI tells the truth (issue 17): what ``detect`` evaluated, anomalies as they
opened, values as they are, quiet pipes, one-line errors that name what failed, and
``validate`` refusing what the services refuse at start. Commands run as a user runs
them: in subprocesses, on real embedded stores."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from segwatch.clickhouse.lifecycle import EVENT_COLUMNS
from segwatch.clickhouse.queries import AnomalyFilter, list_anomalies
from segwatch.collector.cli.output import cell_width
from segwatch.collector.config import ConfigError, parse_config
from segwatch.collector.receive.receiver import OTLPReceiver
from segwatch.collector.serve.users import Accounts
from segwatch.collector.service.api import LocalApi

SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]
OPEN_STORE = (  # a process holding an embedded store, announcing no API, until stdin closes
    "import sys\nfrom segwatch.clickhouse.store import open_client, parse_dsn\n"
    "client = open_client(parse_dsn(sys.argv[1]))\nprint('open', flush=True)\n"
    "sys.stdin.read()\nclient.close()\n"
)


def _environment(**extra: str) -> dict[str, str]:
    """This environment without segwatch's variables (no token or config leaks in)."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    return {**kept, **extra}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEGWATCH, *args], capture_output=True, text=True,
                          timeout=timeout, env=_environment())  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def store_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A config on an empty, migrated embedded store (made in a subprocess: chdb takes one
    store per process, and the commands under test open it themselves)."""
    directory = tmp_path_factory.mktemp("truth")
    config = directory / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: chdb://{directory / 'store'}\n"
                      "detectors:\n  bias:\n    persistence: {found: 1, windows: 2}\n")  # fmt: skip
    made = subprocess.run(
        [*SEGWATCH, "migrate", "--config", str(config)], capture_output=True, text=True,
        timeout=120, env=_environment(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return str(config)


# -- segwatch detect: which window, and when a finding becomes an anomaly


def test_detect_names_the_windows_it_evaluated_and_when_findings_open(store_config: str) -> None:
    """A user who saw findings and an empty `segwatch anomalies` could not tell why: detect
    printed a bare table. It now says each window (once where detectors share one) and the
    persistence rule, the config's where it overrides the manifest's (bias here)."""
    at = "2026-01-01T12:07:00Z"
    shown = run("detect", "--at", at, "--config", store_config)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["detector", "model", "version", "segment", "quantity", "score",
                                "threshold", "support", "exemplar_trace_id"]  # fmt: skip
    evaluated = lines[lines.index("windows evaluated (UTC):") + 1 :]
    trailing = next(line for line in evaluated if "psi_drift," in line)
    assert trailing.startswith("  2026-01-01 11:50–12:05  psi_drift, psi_drift_training")
    assert "data_quality (data_missing, data_range, data_categories)" in trailing
    assert "  2026-01-01 11:00–12:00  bias (opens once found in 1 of its last 2 windows)" in (
        evaluated
    )
    assert sum("psi_drift" in line for line in evaluated) == 1  # a shared window, said once
    assert evaluated[-1].startswith("0 new findings; a finding opens an anomaly once found in "
                                    "2 of its last 3 windows: 0 opened (0 new incidents), "
                                    "0 resolved")  # fmt: skip
    assert "'segwatch anomalies' lists them by incident" in evaluated[-1]
    # --json: the same, for programs, beside the table's columns and rows.
    as_json = run("detect", "--at", at, "--config", store_config, "--json")
    runs = {r["detector"]: r for r in json.loads(as_json.stdout)["runs"]}
    assert runs["psi_drift"]["window_start"] == "2026-01-01T11:50:00+00:00"
    assert runs["psi_drift"]["window_end"] == "2026-01-01T12:05:00+00:00"
    assert runs["psi_drift"]["persistence"] == {"found": 2, "windows": 3}
    assert runs["bias"]["persistence"] == {"found": 1, "windows": 2}
    assert "data_range" in runs["data_quality"]["reports_as"]


# -- segwatch anomalies: a resolved anomaly's sentence


def test_a_resolved_anomaly_keeps_the_sentence_it_opened_with(client) -> None:  # type: ignore[no-untyped-def]
    """Resolved, an anomaly's details were its resolution's "... resolved: not found in the
    last 3 window(s)": what it had been was gone from `segwatch anomalies`."""
    opened_at = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    key = {"detector": "psi_drift", "model_name": "fraud", "model_version": "2.3",
           "model_stage": "serving", "segment_dim": "feature.country", "segment_value": "BR",
           "quantity": "feature.amount"}  # fmt: skip
    figures = {"score": 4.56, "threshold": 0.2, "p_value": 0.0, "support": 749,
               "exemplar_trace_ids": ["ab" * 16], "statistics": {"psi": 4.56}}  # fmt: skip
    sentence = "feature.amount drifted for feature.country=BR: PSI 4.56 > 0.2"
    rows = []
    for state, end, details in (
        ("open", opened_at, sentence),
        ("resolved", opened_at + dt.timedelta(minutes=15), "feature.amount for "
         "feature.country=BR resolved: not found in the last 3 window(s) of psi_drift"),
    ):  # fmt: skip
        event = {**key, **figures, "state": state, "window_end": end, "details": details,
                 "window_start": end - dt.timedelta(minutes=15)}  # fmt: skip
        rows.append([end, *(event[c] for c in EVENT_COLUMNS)])
    client.insert("ml_anomaly_events", rows, column_names=["recorded_at", *EVENT_COLUMNS])
    listed = list_anomalies(client, AnomalyFilter())
    (row,) = listed.rows
    shown = dict(zip(listed.columns, row, strict=True))
    assert shown["state"] == "resolved" and shown["resolved_at"] is not None
    assert shown["details"] == sentence


# -- tables: values as they are, wrapped on a terminal, whole in a pipe, quiet when cut off


def test_null_nan_and_empty_strings_print_distinctly(store_config: str) -> None:
    """NULL and an empty string were both a blank cell; through --json NaN was null, as NULL."""
    query = "SELECT NULL AS a, nan AS b, '' AS c, 'x' AS d, [nan] AS e"
    shown = run("sql", query, "--config", store_config)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[2].split() == ["ᴺᵁᴸᴸ", "nan", '""', "x", '["nan"]']

    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} is not JSON")

    as_json = run("sql", query, "--config", store_config, "--json")
    parsed = json.loads(as_json.stdout, parse_constant=refuse)
    assert parsed["rows"] == [[None, "nan", "", "x", ["nan"]]]


def test_long_values_wrap_on_a_terminal_and_stay_whole_in_a_pipe(store_config: str) -> None:
    """A value past 72 cells was cut with '…': the end of an anomaly's sentence was lost.
    On a terminal it now wraps (a table too wide for that prints a row at a time, as
    ClickHouse's Vertical format); in a pipe each row stays one line, whole."""
    words = [f"word{i:02d}" for i in range(40)]
    query = f"SELECT 'psi_drift' AS detector, '{' '.join(words)}' AS details"
    piped = run("sql", query, "--config", store_config)
    assert piped.stdout.splitlines()[2] == f"psi_drift  {' '.join(words)}"  # one line, whole
    lines = _on_terminal(["sql", query, "--config", store_config], columns=60)
    assert all(cell_width(line) <= 60 for line in lines), lines
    body = lines[2:-1]  # after the header and its rule, before "(1 row)"
    assert len(body) > 1 and body[0].startswith("psi_drift  word00")
    assert all(line.startswith(" " * 11) for line in body[1:])  # continuation lines
    assert " ".join(line.strip() for line in body).split()[1:] == words  # every word, in order
    assert not any("…" in line for line in lines)
    wide = ("SELECT 'fraud' AS model, 'feature.country' AS segment_dim, 'BR' AS segment_value, "
            f"'feature.amount' AS quantity, '{' '.join(words)}' AS details")  # fmt: skip
    lines = _on_terminal(["sql", wide, "--config", store_config], columns=60)
    assert lines[:4] == ["Row 1:", "──────", "model:         fraud",
                         "segment_dim:   feature.country"]  # fmt: skip
    details = lines[lines.index("quantity:      feature.amount") + 1 : -2]
    assert details[0].startswith("details:       word00")
    assert all(cell_width(line) <= 60 for line in details)
    assert " ".join(line.strip() for line in details).split()[1:] == words
    assert lines[-2:] == ["", "(1 row)"]


def _on_terminal(arguments: list[str], columns: int) -> list[str]:
    """What the CLI prints on a terminal (a real pty) ``columns`` wide."""
    main, follower = pty.openpty()
    try:
        with subprocess.Popen(
            [*SEGWATCH, *arguments], stdout=follower, stderr=subprocess.DEVNULL,
            env=_environment(COLUMNS=str(columns)),
        ) as process:  # fmt: skip
            os.close(follower)
            printed = _read_all(main)
            assert process.wait(timeout=120) == 0
    finally:
        os.close(main)
    return printed.decode().replace("\r\n", "\n").splitlines()


def _read_all(fd: int) -> bytes:
    """Everything written to a pty until its last writer closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_reader_that_stops_reading_ends_the_command_quietly(store_config: str) -> None:
    """`segwatch sql ... | head -1` printed "Exception ignored ... BrokenPipeError" or an
    error line once head had gone."""
    query = "SELECT number, repeat('x', 40) AS text FROM numbers(90000)"  # MiBs, not 64 KiB
    with subprocess.Popen(
        [*SEGWATCH, "sql", query, "--config", store_config], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=_environment(),
    ) as process:  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().split() == [b"number", b"text"]
        process.stdout.close()  # as head -1 does
        errors = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert code == 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
    assert errors.splitlines() == [errors.splitlines()[0]]  # the store line, nothing else
    assert errors.startswith("segwatch: store chdb://")


# -- errors: one line, naming what failed


@pytest.mark.parametrize("taken_by", ["api", "receiver"])
def test_a_taken_port_names_the_key_and_address(tmp_path: Path, taken_by: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"api": "127.0.0.1:0", "receiver": "127.0.0.1:0", taken_by: f"127.0.0.1:{port}"}
        config = tmp_path / "segwatch.yaml"
        config.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n"
                          f"receiver:\n  grpc:\n    endpoint: {ports['receiver']}\n"
                          f"api:\n  endpoint: {ports['api']}\n")  # fmt: skip
        refused = run("collector", "--config", str(config))
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    if taken_by == "api":
        assert last == f"segwatch: error: api.endpoint 127.0.0.1:{port}: Address already in use"
    else:
        assert last.startswith(f"segwatch: error: receiver.grpc.endpoint 127.0.0.1:{port}: ")


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[Path]:
    """An embedded store another process has open, announcing no collector API."""
    store = tmp_path / "store"
    with subprocess.Popen(
        [sys.executable, "-c", OPEN_STORE, f"chdb://{store}"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=_environment(),
    ) as holder:  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        try:
            yield store
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=60)


@pytest.mark.parametrize("command", [["sql", "SELECT 1"], ["anomalies"]])
def test_a_store_another_process_holds_is_one_line_naming_it(
    held_store: Path, tmp_path: Path, command: list[str]
) -> None:
    """The engine printed its own exception ("Code: 76. DB::Exception: Cannot lock file
    .../status ...") before segwatch's line. (A collector starts on such a store and
    acknowledges into its spool until the store is free: test_store_unreachable.py.)"""
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: chdb://{held_store}\n"
                      "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
                      "api:\n  endpoint: 127.0.0.1:0\n")  # fmt: skip
    refused = run(*command, "--config", str(config))
    assert refused.returncode == 1
    assert "DB::Exception" not in refused.stderr and "Code: 76" not in refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if " INFO " not in line]
    assert line.startswith(f"segwatch: error: the embedded store {held_store} is open in "
                           "another process (pid ")  # fmt: skip
    assert "-c import sys" in line.split("(pid ", 1)[1]  # the holder's command, from /proc


def test_bad_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    """PyYAML's text named the file "<unicode string>", over five lines."""
    config = tmp_path / "segwatch.yaml"
    config.write_text("storage:\n  dsn: chdb://store\nmodels:\n  fraud:\n    features: [a, b\n")
    for command in (["validate", str(config)], ["collector", "--config", str(config)]):
        refused = run(*command)
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"segwatch: {config}: line 6, column 1: not valid YAML: expected ',' or ']', but "
            "got '<stream end>' (while parsing a flow sequence at line 5)"
        ]


STARTUP_REFUSALS = {
    "receiver beyond loopback, unprotected": (
        "receiver:\n  grpc:\n    endpoint: 0.0.0.0:0\napi:\n  endpoint: 127.0.0.1:0\n",
        "receiver.grpc.endpoint (line 3): 0.0.0.0:0 would take data from other machines",
    ),
    "API beyond loopback, no token": (
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\napi:\n  endpoint: 0.0.0.0:0\n",
        "api.endpoint (line 5): 0.0.0.0:0 would be reachable from other machines",
    ),
    "a door user's password unset": (
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\napi:\n  endpoint: 127.0.0.1:0\n"
        "serve:\n  in_collector: true\n  http:\n    endpoint: 127.0.0.1:0\n  users:\n"
        "    reader:\n      password_env: SEGWATCH_TEST_UNSET\n      readonly: true\n",
        "serve.users.reader.password_env (line 12): names SEGWATCH_TEST_UNSET, which is not set",
    ),
    "a door on a server's store": (
        "storage:\n  dsn: http://127.0.0.1:9/segwatch\nreceiver:\n  grpc:\n"
        "    endpoint: 127.0.0.1:0\napi:\n  endpoint: 127.0.0.1:0\n"
        "serve:\n  in_collector: true\n  http:\n    endpoint: 127.0.0.1:0\n",
        "serve.in_collector (line 9): serves the collector's embedded store",
    ),
    "two listeners on one port": (
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:{port}\napi:\n  endpoint: 127.0.0.1:{port}\n",
        "api.endpoint (line 5): 127.0.0.1:{port} is the port of receiver.grpc.endpoint",
    ),
    "a store path that is a file": (
        "storage:\n  dsn: chdb://a-file\nreceiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\n",
        "storage.dsn (line 2): {dir}/a-file is not a directory",
    ),
    "a spool path that is a file": (
        "storage:\n  spool:\n    path: a-file\nreceiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\n",
        "storage.spool.path (line 3): {dir}/a-file is not a directory",
    ),
}


@pytest.mark.parametrize("case", STARTUP_REFUSALS)
def test_validate_refuses_what_the_collector_refuses_at_start(tmp_path: Path, case: str) -> None:
    """Each of these passed `segwatch validate` and failed (exit 1) only once `segwatch
    collector` was starting. Both now refuse them the same way: exit 2, the YAML key and
    line; the collector before it opens anything."""
    text, problem = STARTUP_REFUSALS[case]
    port = str(_free_port())
    (tmp_path / "a-file").write_text("not a directory\n")
    config = tmp_path / "segwatch.yaml"
    config.write_text(text.replace("{port}", port))
    expected = problem.replace("{port}", port).replace("{dir}", str(tmp_path))
    validated = run("validate", str(config))
    assert validated.returncode == 2
    assert expected in validated.stderr
    started = run("collector", "--config", str(config))
    assert started.returncode == 2
    assert expected in started.stderr
    assert not (tmp_path / "segwatch-data").exists()  # refused before any store was made


# -- the same rule at validate and at a component's start (config.startup)


def _problem(text: str, start: str, environ: dict[str, str]) -> str | None:
    """The one problem ``parse_config`` finds in ``text`` for ``start``, its line left out
    (``key: message``, as a component says it); None when it accepts the config."""
    try:
        parse_config(text, start=start, environ=environ)
    except ConfigError as refused:
        (problem,) = refused.problems
        return re.sub(r" \(line \d+\): ", ": ", problem)
    return None


def _refusal(start: Callable[[], object], stop: Callable[[], object]) -> str | None:
    """What a component's ``start`` raises (ValueError), or None once it has started."""
    try:
        start()
    except ValueError as refused:
        return str(refused)
    stop()
    return None


@pytest.mark.parametrize("endpoint", ["127.0.0.1:0", "localhost:0", "0.0.0.0:0"])
def test_the_receiver_refuses_at_start_what_validate_refuses(endpoint: str) -> None:
    """The receiver's own check and validate's were two copies (their messages already
    differed); now one function. Refused alike, said alike, but for the token variable,
    which only validate knows from the config (the receiver names the default)."""
    for token, insecure in ((False, False), (True, False), (False, True)):
        text = f"receiver:\n  grpc:\n    endpoint: {endpoint}\n    insecure: {insecure}\n"
        environ = {"SEGWATCH_RECEIVER_TOKEN": "t0ken"} if token else {}
        validated = _problem(text, "collector", environ)
        receiver = OTLPReceiver(endpoint, None, token="t0ken" if token else None,  # type: ignore[arg-type]
                                insecure=insecure)  # fmt: skip
        started = _refusal(receiver.start, receiver.shutdown)
        refused = endpoint == "0.0.0.0:0" and not (token or insecure)
        assert (validated is not None, started is not None) == (refused, refused)
        if validated is not None and started is not None:
            variable = "SEGWATCH_RECEIVER_TOKEN (receiver.grpc.token_env)"
            told = "SEGWATCH_RECEIVER_TOKEN (or the variable receiver.grpc.token_env names)"
            assert started == validated.replace(variable, told)
            assert started.startswith("receiver.grpc.endpoint: 0.0.0.0:0 would take data")


def test_the_api_and_the_door_refuse_at_start_in_validates_words() -> None:
    """The API (given its config) and the door's accounts say exactly what validate says,
    its line apart."""
    for endpoint, token in (("127.0.0.1:0", None), ("0.0.0.0:0", "t0ken"), ("0.0.0.0:0", None)):
        text = f"api:\n  endpoint: {endpoint}\n  token_env: T_API_TOKEN\n"
        validated = _problem(text, "collector", {"T_API_TOKEN": token} if token else {})
        api = LocalApi(endpoint, None, dict, config=parse_config(text), token=token)  # type: ignore[arg-type]
        assert _refusal(api.start, api.shutdown) == validated
        assert (validated is None) == (token is not None or endpoint.startswith("127."))
    assert validated is not None and "set T_API_TOKEN (api.token_env)" in validated
    users = "serve:\n  users:\n    reader: {password_env: T_READER_PW, readonly: true}\n"
    for environ in ({}, {"T_READER_PW": ""}, {"T_READER_PW": "secret"}):
        validated = _problem(users, "serve", environ)
        config = parse_config(users)
        door = _refusal(lambda: Accounts(config.serve.users, environ), lambda: None)  # noqa: B023
        assert door == validated
        assert (door is None) == bool(environ.get("T_READER_PW"))


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["anomalies", "--since", "24"], "segwatch anomalies: error: argument --since: duration"),
        (["anomalies", "--state", "opened"], "segwatch anomalies: error: argument --state:"),
        (["detect", "--at", "yesterday"], "segwatch detect: error: argument --at:"),
    ],
)
def test_a_bad_argument_is_one_line_pointing_at_help(argv: list[str], said: str) -> None:
    """argparse printed its usage block first (three or four lines)."""
    refused = run(*argv)
    assert refused.returncode == 2
    assert refused.stderr.startswith(said), refused.stderr
    assert refused.stderr.endswith(f"(see segwatch {argv[0]} --help)\n")
    assert len(refused.stderr.splitlines()) == 1


def test_a_query_error_quotes_the_query_as_written(tmp_path: Path) -> None:
    """The embedded engine's client sends the CLI's readonly setting as a SETTINGS clause,
    which the engine quoted back in its error as if the user had written it."""
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n")
    assert run("migrate", "--config", str(config)).returncode == 0
    refused = run("sql", "--config", str(config), "SELECT * FROM nope")
    assert refused.returncode == 1
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("segwatch: error:")]
    assert "In scope SELECT * FROM nope. (UNKNOWN_TABLE)" in line and "SETTINGS" not in line
