"""``segwatch serve`` as a user runs it: the README's commands against it, printing what the
README shows; the CLI going through it; a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from collector_process import free_port
from waiting import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = README.read_text().split("## One store, many processes")[1].split("\n## ")[0]
CONSOLE = re.findall(r"```console\n(.*?)```", SECTION, flags=re.DOTALL)


def _transcript(block: str) -> list[tuple[str, str]]:
    """The block's commands (``$ ...``), each with the output the README shows for it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return [(command, "".join(f"{out}\n" for out in output)) for command, output in steps]


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    store: Path
    config: Path


def _segwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segwatch.collector.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    config = tmp_path / "segwatch.yaml"
    config.write_text(f"serve:\n  http: {{endpoint: 127.0.0.1:{port}}}\n")
    store = tmp_path / "segwatch-data"  # the default store, beside the config
    process = subprocess.Popen(
        [sys.executable, "-m", "segwatch.collector.cli", "serve", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    discovery = store / "segwatch-collector.json"
    wait_until(lambda: discovery.exists() or process.poll() is not None, timeout=120)
    assert process.poll() is None, process.communicate()[1]
    yield Served(process, port, store, config)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=60)


def test_the_readme_shows_what_segwatch_serve_and_curl_print(served: Served) -> None:
    start, session = CONSOLE
    ((command, shown),) = _transcript(start)
    assert command == "segwatch serve --config segwatch.yaml"
    steps = _transcript(session)
    assert len(steps) >= 4
    for command, expected in steps:
        assert command.startswith("curl ")
        run = subprocess.run(["bash", "-c", command.replace(":8123", f":{served.port}")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.stdout == expected, command

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0
    log = served.process.communicate()[1]
    line = shown.strip().split(" INFO ", 1)[1]  # the README's line, after its timestamp
    line = line.replace("/srv/segwatch/segwatch-data", str(served.store))
    assert line.replace(":8123", f":{served.port}") in log
    assert not (served.store / "segwatch-collector.json").exists()


def test_the_cli_goes_through_segwatch_serve_while_it_holds_the_store(served: Served) -> None:
    found = _segwatch("sql", "SELECT count() FROM ml_model_calls", "--config",
                      str(served.config), "--json", cwd=served.config.parent)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["rows"] == [[0]]
    assert found.stderr == (
        f"segwatch: store chdb://{served.store} (through segwatch serve at "
        f"http://127.0.0.1:{served.port})\n"
    )
    migrate = _segwatch("migrate", "--config", str(served.config), cwd=served.config.parent)
    assert migrate.returncode == 1
    assert "segwatch serve" in migrate.stderr


def test_segwatch_serve_refuses_a_server_dsn_and_an_open_door_without_users(
    tmp_path: Path,
) -> None:
    server = tmp_path / "server.yaml"
    server.write_text("storage:\n  dsn: http://127.0.0.1:9/segwatch\n")
    refused = _segwatch("serve", "--config", str(server), cwd=tmp_path)
    assert refused.returncode == 2  # a configuration refusal
    assert "segwatch serve opens an embedded store" in refused.stderr
    wide = tmp_path / "wide.yaml"
    wide.write_text("serve:\n  http: {endpoint: 0.0.0.0:8123}\n")
    invalid = _segwatch("serve", "--config", str(wide), cwd=tmp_path)
    assert invalid.returncode == 2
    assert "serve.http.endpoint" in invalid.stderr and "serve.users" in invalid.stderr


def test_a_collector_or_a_second_serve_on_a_served_store_is_refused(served: Served) -> None:
    """Not left waiting on the engine's lock, taking over the discovery file the CLI reads."""
    for command in ("collector", "serve"):
        refused = _segwatch(command, "--config", str(served.config), cwd=served.config.parent)
        assert refused.returncode == 1, refused.stderr
        assert f"served by segwatch serve at http://127.0.0.1:{served.port}" in refused.stderr
        assert f"http://127.0.0.1:{served.port}/segwatch" in refused.stderr
    assert (served.store / "segwatch-collector.json").exists()


def test_a_reader_queries_through_segwatch_serve_with_the_cli(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "segwatch.yaml"
    config.write_text(
        f"serve:\n  http: {{endpoint: 127.0.0.1:{port}}}\n  users:\n"
        "    analyst: {password_env: ANALYST_PW, readonly: true}\n"
    )
    env = {**os.environ, "ANALYST_PW": "apw"}
    process = subprocess.Popen(
        [sys.executable, "-m", "segwatch.collector.cli", "serve", "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        discovery = tmp_path / "segwatch-data" / "segwatch-collector.json"
        wait_until(lambda: discovery.exists() or process.poll() is not None, timeout=120)
        reader = {**env, "CLICKHOUSE_USER": "analyst", "CLICKHOUSE_PASSWORD": "apw"}
        found = subprocess.run(
            [sys.executable, "-m", "segwatch.collector.cli", "sql", "SELECT 1 AS one",
             "--config", str(config), "--json"],
            cwd=tmp_path, env=reader, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["rows"] == [[1]]
        # Without a login of its users, the refusal says which variables to set.
        anonymous = {k: v for k, v in env.items() if not k.startswith("CLICKHOUSE_")}
        refused = subprocess.run(
            [sys.executable, "-m", "segwatch.collector.cli", "sql", "SELECT 1",
             "--config", str(config)],
            cwd=tmp_path, env=anonymous, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        assert "refused the login 'default': set $CLICKHOUSE_USER and " in refused.stderr
    finally:
        process.terminate()
        process.wait(timeout=60)
