"""The segwatch CLI in real subprocesses: help, errors, direct store and running collector."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segwatch.clickhouse.queries import QueryResult
from segwatch.collector.cli.output import cell_width, format_cell, print_table, progress_bar

SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]


def run(
    *args: str, timeout: float = 120, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; ``env`` replaces the environment (no $SEGWATCH_CONFIG leaks in)."""
    environment = {k: v for k, v in os.environ.items() if k != "SEGWATCH_CONFIG"}
    return subprocess.run([*SEGWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=environment if env is None else env)  # fmt: skip


def make_store(path: Path) -> None:
    """An empty embedded store (in a subprocess: chdb takes one store per process)."""
    code = ("import sys\nfrom segwatch.clickhouse.store import open_client, parse_dsn\n"
            "open_client(parse_dsn(sys.argv[1])).close()")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, f"chdb://{path}"], check=True, timeout=120)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "segwatch.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A config on the store ``tmp_path/store``, which a test reading it must create first."""
    return write_config(
        tmp_path,
        f"storage:\n  dsn: chdb://{tmp_path / 'store'}\n"
        "receiver:\n  grpc:\n    endpoint: 127.0.0.1:0\n"
        "api:\n  endpoint: 127.0.0.1:0\n",
    )


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["collector"], ["sql"], ["anomalies"], ["detect"]]
)
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: segwatch" in result.stdout


def test_version_is_the_installed_distributions() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"segwatch {importlib.metadata.version('segwatch')}\n"
    assert "--version" in run("--help").stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["sql"], 2, "the following arguments are required: query"),
        (["anomalies", "--limit", "0"], 2, "not between 1 and 10000"),
        (["anomalies", "--state", "closed"], 2, "invalid choice: 'closed'"),
        (["anomalies", "--since", "5"], 2, "must be a positive number with s, m, h or d"),
        (["detect", "--at", "yesterday"], 2, "not an ISO 8601 time"),
        (["sql", "SELECT 1", "--config", "/nonexistent.yaml"], 2, "file not found"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_exits_non_zero_with_a_reason(args: list[str], code: int, message: str) -> None:
    result = run(*args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_names_every_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, "storage:\n  dsn: mysql://x\nreceivr: {}\n")
    result = run("sql", "SELECT 1", "--config", path)
    assert result.returncode == 2
    assert "storage.dsn (line 2)" in result.stderr
    assert "receivr (line 3): unknown key; did you mean 'receiver'?" in result.stderr


def test_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    """No ClickHouse server can run on this machine: this checks the http(s) path's errors."""
    path = write_config(tmp_path, "storage:\n  dsn: http://default:s3cret@127.0.0.1:1/segwatch\n")
    result = run("sql", "SELECT 1", "--config", path)
    assert result.returncode == 1
    assert result.stderr.startswith("segwatch: error: cannot open store http://default:***@")
    assert "s3cret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("dsn", ["ftp://default:s3cret@host/db", "http://default:s3cret@/db"])
def test_a_malformed_dsn_is_reported_without_the_password(tmp_path: Path, dsn: str) -> None:
    result = run("sql", "SELECT 1", "--config", write_config(tmp_path, f"storage:\n  dsn: {dsn}\n"))
    assert result.returncode == 2
    assert "storage.dsn (line 2)" in result.stderr and "default:***@" in result.stderr
    assert "s3cret" not in result.stderr


def test_sql_on_the_store_directly(config: str, tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    result = run("sql", "SELECT 1 + 1 AS two, 'x' AS s", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "two" in result.stdout and "2" in result.stdout
    assert result.stderr == f"segwatch: store chdb://{tmp_path / 'store'}\n"
    empty = run("anomalies", "--config", config)
    assert empty.returncode == 0 and "(0 rows)" in empty.stdout
    assert empty.stdout.splitlines()[0].split()[:5] == [
        "incident",
        "role",
        "state",
        "opened_at",
        "resolved_at",
    ]
    findings = run("anomalies", "--findings", "--since", "1h", "--config", config)
    assert findings.returncode == 0, findings.stderr
    assert findings.stdout.splitlines()[0].split()[:2] == ["window_end", "detector"]
    as_json = run(
        "sql", "SELECT count() AS n FROM ml_segment_aggregates", "--config", config, "--json"
    )
    assert json.loads(as_json.stdout) == {"columns": ["n"], "rows": [[0]]}
    # The engine's own NULL, NaN and Map values, and a CJK city, as a person reads them.
    values = ("SELECT * FROM values('city String, n Nullable(Float64), m Map(String, UInt8)', "
              "('東京', nan, map('a', 1)), ('Zürich', NULL, map()))")  # fmt: skip
    cells = run("sql", values, "--config", config)
    assert cells.returncode == 0, cells.stderr
    assert cells.stdout == ("city    n     m\n------  ----  --------\n東京    nan   {\"a\": 1}\n"
                            "Zürich  ᴺᵁᴸᴸ  {}\n(2 rows)\n")  # fmt: skip


def test_tables_align_by_terminal_cells_and_keep_one_row_per_line() -> None:
    """A CJK character takes two terminal cells: measured with len(), every column after
    東京 slid one cell left per character. Combining marks take none; NULL is ᴺᵁᴸᴸ, NaN
    'nan'; maps and arrays print as JSON (they printed as Python reprs); a newline in a
    value is escaped (it broke the row in two); wide text is whole (it was cut at 72 cells:
    on a terminal it wraps, see test_cli_truth)."""
    table = QueryResult(["city", "note", "score", "tags"], [
        ["東京", None, float("nan"), {"lang": "日本語", "n": 2}],
        ["Zu\u0308rich", "line one\nline two", 0.5, ["a", None]],
        ["São Paulo", "ok", float("inf"), {}],
    ])  # fmt: skip
    out = io.StringIO()
    print_table(table, out)
    assert out.getvalue() == (
        "city       note                score  tags\n"
        "---------  ------------------  -----  --------------------------\n"
        '東京       ᴺᵁᴸᴸ                nan    {"lang": "日本語", "n": 2}\n'
        'Zu\u0308rich     line one\\nline two  0.5    ["a", null]\n'
        "São Paulo  ok                  inf    {}\n"
        "(3 rows)\n"
    )
    as_json = io.StringIO()
    print_table(table, as_json, as_json=True)
    # NULL null, NaN the string "nan" (strict JSON, and apart from NULL).
    assert json.loads(as_json.getvalue())["rows"][0] == ["東京", None, "nan", table.rows[0][3]]
    assert format_cell("漢" * 40) == "漢" * 40 and cell_width("漢" * 40) == 80


def test_the_progress_bar_redraws_only_on_a_terminal() -> None:
    """A log or a pipe gets the finished bar once; a terminal (a real pty) gets it redrawn in
    place, and a bar an error interrupts ends its line before the error is printed."""
    piped = io.StringIO()
    with progress_bar("rows", piped) as update:
        for done in (10, 50, 100):
            update(done, 100)
    assert piped.getvalue() == f"  [{'#' * 30}] 100/100 rows\n"
    main, follower = pty.openpty()
    try:
        with (
            open(follower, "w", encoding="utf-8") as terminal,
            contextlib.suppress(RuntimeError),
            progress_bar("rows", terminal) as update,
        ):
            update(10, 100)
            update(50, 100)
            raise RuntimeError("the load failed")
        drawn = b""
        while chunk := _read_pty(main):  # the terminal is closed: read to its end
            drawn += chunk
    finally:
        os.close(main)
    bars = f"\r  [###{'.' * 27}] 10/100 rows\r  [{'#' * 15}{'.' * 15}] 50/100 rows\r\n"
    assert drawn.decode() == bars


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: Linux's end of a pty whose other side is closed
        return b""


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("INSERT INTO ml_anomalies (detector) VALUES ('x')", "INSERT statements are not allowed"),
        ("DROP TABLE ml_anomalies", "DROP statements are not allowed"),
        ("SELECT 1 SETTINGS readonly = 0", "readonly"),  # the engine's readonly=1 refuses it
    ],
)
def test_sql_is_read_only(config: str, query: str, refusal: str, tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    result = run("sql", query, "--config", config)
    assert result.returncode == 1
    store_line, error = result.stderr.strip().splitlines()  # which store, then one error line
    assert store_line.startswith("segwatch: store chdb://")
    assert refusal in error


def test_sql_reaches_a_running_collector(config: str, tmp_path: Path) -> None:
    collector = subprocess.Popen(
        [*SEGWATCH, "collector", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    discovery = tmp_path / "store" / "segwatch-collector.json"
    try:
        deadline = time.monotonic() + 60
        while not discovery.exists():
            assert collector.poll() is None, collector.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        info = json.loads(discovery.read_text())
        assert info["pid"] == collector.pid and info["api"].startswith("http://127.0.0.1:")
        # The store is locked by the collector; the CLI goes through its local API.
        result = run(
            "sql", "SELECT count() FROM ml_segment_aggregates", "--config", config, "--json"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["rows"] == [[0]]
        assert result.stderr == (f"segwatch: store chdb://{tmp_path / 'store'} "
                                 f"(through the collector at {info['api']})\n")  # fmt: skip
        refused = run("sql", "DROP TABLE ml_anomalies", "--config", config)
        assert refused.returncode == 1 and "DROP statements are not allowed" in refused.stderr
        training = tmp_path / "train.csv"
        training.write_text("amount,country\n1.5,BR\n20,US\n")
        loaded = run("baseline", str(training), "--model", "fraud", "--config", config)
        assert loaded.returncode == 0, loaded.stderr  # through the collector's API
        assert "loaded 2 rows" in loaded.stdout
        for command in (["anomalies", "--json", "--state", "open", "--since", "2h"],
                        ["anomalies", "--json", "--findings"], ["detect", "--json"]):  # fmt: skip
            answer = run(*command, "--config", config)
            assert answer.returncode == 0, answer.stderr
            assert json.loads(answer.stdout)["rows"] == []
            assert "segment_value" in answer.stdout or "segment" in answer.stdout
    finally:
        collector.send_signal(signal.SIGTERM)
        output, _ = collector.communicate(timeout=60)
    assert collector.returncode == 0, output
    assert not discovery.exists()
    # With the collector gone, the CLI opens the store itself again.
    assert run("sql", "SELECT 1", "--config", config).returncode == 0
    assert os.path.isdir(tmp_path / "store")


def test_read_commands_never_create_a_store(tmp_path: Path) -> None:
    """With no config in an empty directory, `sql` used to create ./segwatch-data and answer."""
    cwd = tmp_path / "empty"
    cwd.mkdir()
    for command in (["sql", "SELECT 1"], ["anomalies"], ["detect"]):
        result = run(*command, cwd=cwd)
        assert result.returncode == 1, result.stdout
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"segwatch: error: no store at {cwd / 'segwatch-data'}: ")
        assert "the default storage.dsn: no --config, $SEGWATCH_CONFIG" in line
        assert list(cwd.iterdir()) == []  # nothing created
    # A config naming a directory that holds no store: the same, naming the file to fix.
    (cwd / "elsewhere").mkdir()
    path = write_config(tmp_path, f"storage:\n  dsn: chdb://{cwd / 'elsewhere'}\n")
    result = run("sql", "SELECT 1", "--config", path, cwd=cwd)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "holds no segwatch store" in line and f"storage.dsn of {path}" in line
    assert list((cwd / "elsewhere").iterdir()) == []


def test_the_config_is_found_and_its_relative_paths_are_its_own(tmp_path: Path) -> None:
    """--config, else $SEGWATCH_CONFIG, else ./segwatch.yaml; chdb://data is beside the file."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = project / "segwatch.yaml"
    config.write_text("storage:\n  dsn: chdb://data\n")
    store = project / "data"
    training = tmp_path / "train.csv"
    training.write_text("amount,country\n1.5,BR\n20,US\n")
    loaded = run("baseline", str(training), "--model", "fraud", "--config", str(config),
                 cwd=elsewhere)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert store.is_dir() and list(elsewhere.iterdir()) == []  # not in the cwd
    assert f"segwatch: store chdb://{store}\n" in loaded.stderr
    query = ("SELECT sum(sampled) FROM ml_baseline_aggregates "
             "WHERE segment_dim = '__all__' AND quantity = 'feature.amount'")  # fmt: skip
    env = {**os.environ, "SEGWATCH_CONFIG": str(config)}
    for where, environment in ((elsewhere, env), (project, None)):  # $SEGWATCH_CONFIG, ./
        found = run("sql", query, "--json", cwd=where, env=environment)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["rows"] == [[2]]
        assert found.stderr == f"segwatch: store chdb://{store}\n"
    # --config wins over $SEGWATCH_CONFIG and ./segwatch.yaml.
    other = write_config(tmp_path, f"storage:\n  dsn: chdb://{tmp_path / 'none'}\n")
    chosen = run("sql", query, "--config", other, cwd=project, env=env)
    assert chosen.returncode == 1 and f"no store at {tmp_path / 'none'}" in chosen.stderr
    # $SEGWATCH_CONFIG naming a missing file is bad configuration, not the defaults.
    missing = {**os.environ, "SEGWATCH_CONFIG": str(tmp_path / "nope.yaml")}
    assert run("sql", query, cwd=elsewhere, env=missing).returncode == 2


def test_migrate_applies_what_is_missing_and_dry_run_changes_nothing(
    config: str, tmp_path: Path
) -> None:
    from segwatch.clickhouse.migrate import load_migrations
    from segwatch.clickhouse.sql_text import split_statements

    shipped = load_migrations()
    store = tmp_path / "store"
    dry = run("migrate", "--dry-run", "--config", config)
    assert dry.returncode == 0, dry.stderr
    assert "every migration is pending" in dry.stderr
    assert not store.exists()  # a dry run creates nothing
    headers = [line for line in dry.stdout.splitlines() if line.startswith("-- ")]
    assert headers == [f"-- {m.name}" for m in shipped]
    # Each statement ends with ';': the printed SQL splits into the migrations' statements.
    assert split_statements(dry.stdout) == [s for m in shipped for s in split_statements(m.sql)]

    applied = run("migrate", "--config", config)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [f"applied {m.name}" for m in shipped]
    assert applied.stderr == f"segwatch: store chdb://{store}\n"
    for args in (["migrate"], ["migrate", "--dry-run"]):
        again = run(*args, "--config", config)
        assert (again.returncode, again.stdout) == (0, "the store is up to date\n"), again.stderr


def test_migrate_dry_run_prints_only_the_pending_sql(config: str, tmp_path: Path) -> None:
    from segwatch.clickhouse.migrate import load_migrations

    store = tmp_path / "store"
    code = ("import sys\nfrom segwatch.clickhouse.migrate import apply_migrations, "
            "load_migrations\nfrom segwatch.clickhouse.store import open_client, parse_dsn\n"
            "client = open_client(parse_dsn(sys.argv[1]))\n"
            "apply_migrations(client, load_migrations()[:10])\nclient.close()")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, f"chdb://{store}"], check=True, timeout=120)
    first = run("migrate", "--dry-run", "--config", config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("-- 0011_aggregates_by_time.sql\nCREATE TABLE IF NOT EXISTS")
    assert (
        "EXCHANGE TABLES ml_segment_aggregates AND ml_segment_aggregates_by_time;\n"
        "DROP TABLE ml_segment_aggregates_by_time;\n"
        "\n-- 0012_leases.sql\nCREATE TABLE IF NOT EXISTS segwatch_leases\n"
    ) in first.stdout
    pending = [line for line in first.stdout.splitlines() if line.startswith("-- 0")]
    assert pending == [f"-- {m.name}" for m in load_migrations()[10:]]
    assert run("migrate", "--dry-run", "--config", config).stdout == first.stdout  # unchanged
    applied = run("migrate", "--config", config).stdout.splitlines()
    assert applied == [f"applied {m.name}" for m in load_migrations()[10:]]


def test_migrate_says_when_a_collector_holds_the_store(config: str, tmp_path: Path) -> None:
    from collector_process import CollectorProcess

    collector = CollectorProcess(Path(config), tmp_path / "store")
    try:
        for args in (["migrate"], ["migrate", "--dry-run"]):
            refused = run(*args, "--config", config)
            assert refused.returncode == 1
            (line,) = refused.stderr.strip().splitlines()
            held = f"the embedded store {tmp_path / 'store'} is held by the collector running"
            assert line.startswith(f"segwatch: error: {held} at {collector.api}")
            assert "stop it to run segwatch migrate" in line
    finally:
        assert collector.stop() == 0, collector.log()


def test_migrate_on_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    """No ClickHouse server can run on this machine: this checks the http(s) path's errors."""
    path = write_config(tmp_path, "storage:\n  dsn: http://default:s3cret@127.0.0.1:1/segwatch\n")
    result = run("migrate", "--config", path)
    assert result.returncode == 1
    assert result.stderr.startswith("segwatch: error: cannot open store http://default:***@")
    assert "s3cret" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_migrate_renders_the_cluster_form_without_a_store(tmp_path: Path) -> None:
    from segwatch.clickhouse.cluster import render_cluster_migrations
    from segwatch.clickhouse.migrate import load_migrations
    from segwatch.clickhouse.sql_text import split_statements

    cwd = tmp_path / "empty"
    cwd.mkdir()
    rendered = run("migrate", "--cluster", "segwatch_cluster", "--render", cwd=cwd)
    assert rendered.returncode == 0, rendered.stderr
    assert list(cwd.iterdir()) == []  # the default store was not reached, nor made
    expected = render_cluster_migrations(load_migrations(), "segwatch_cluster")
    assert split_statements(rendered.stdout) == [
        s for m in expected for s in split_statements(m.sql)
    ]
    assert "ON CLUSTER segwatch_cluster" in rendered.stdout
    plain = run("migrate", "--render", cwd=cwd)
    assert plain.returncode == 0 and "ON CLUSTER" not in plain.stdout
    for args, code, message in (
        (["--cluster", "bad-name", "--render"], 2, "cluster name 'bad-name' must match"),
        (["--render", "--dry-run"], 2, "not allowed with argument"),
    ):
        refused = run("migrate", *args, cwd=cwd)
        assert refused.returncode == code and message in refused.stderr, refused.stderr
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("mode", [[], ["--dry-run"]])
def test_migrate_writes_the_cluster_form_for_review_only(
    config: str, tmp_path: Path, mode: list[str]
) -> None:
    """Collectors cannot run on the cluster form yet: --cluster without --render is refused
    before any store is reached."""
    refused = run("migrate", "--cluster", "segwatch_cluster", *mode, "--config", config)
    assert refused.returncode == 2
    expected = (
        "segwatch: error: segwatch migrate --cluster needs --render, which writes the cluster "
        "form for review: collectors cannot run on the cluster form yet"
    )
    assert refused.stderr.startswith(expected) and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "store").exists()


def test_migrate_points_at_the_door_of_segwatch_serve(config: str, tmp_path: Path) -> None:
    """The discovery file `segwatch serve` writes (this test's pid stands for its process)."""
    store = tmp_path / "store"
    store.mkdir()
    door = {"pid": os.getpid(), "serve": "http://127.0.0.1:8123"}  # the DSN's database
    (store / "segwatch-collector.json").write_text(json.dumps(door))
    refused = run("migrate", "--config", config)
    assert refused.returncode == 1
    assert "is served by segwatch serve at http://127.0.0.1:8123" in refused.stderr
    assert refused.stderr.rstrip().endswith("storage.dsn: http://127.0.0.1:8123/segwatch")


def test_migrate_names_the_collector_that_serves_its_own_store(config: str, tmp_path: Path) -> None:
    """serve.in_collector: the collector's discovery file names its API and its door; the
    collector holds the store, and stopping it is what lets segwatch migrate run."""
    store = tmp_path / "store"
    store.mkdir()
    held = {"pid": os.getpid(), "api": "http://127.0.0.1:4318", "token": "t",
            "serve": "http://127.0.0.1:8123"}  # fmt: skip
    (store / "segwatch-collector.json").write_text(json.dumps(held))
    refused = run("migrate", "--config", config)
    assert refused.returncode == 1
    assert "held by the collector running at http://127.0.0.1:4318" in refused.stderr
    assert "stop it to run segwatch migrate" in refused.stderr
    assert "segwatch serve" not in refused.stderr and "None" not in refused.stderr
