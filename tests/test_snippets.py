"""Every fenced code block in README.md, docs/*.md and examples/**/README.md is run or
validated by a test, by language:

* ``python``: run in a fresh interpreter (no OTel SDK set up), as shown;
* ``yaml``: a segwatch config (top-level keys all config sections) passes
  ``segwatch validate``; other YAML is parsed and checked as its kind requires (an
  OTel Collector config, Prometheus rules or config, Alertmanager, Grafana
  provisioning, Kubernetes); YAML of no known kind fails;
* ``sql``: each statement runs read-only (as ``segwatch sql`` runs it) against the
  store ``segwatch demo`` fills (rows are not required: the demo has no labels);
* ``console``/``bash``/``sh``/``shell``: commands this test can run on its own
  (``segwatch validate|explain FILE``, ``--help``, ``--version``) are run, and the
  output a ``console`` block shows under ``$ command`` is compared; any other block is
  listed in :data:`COVERED_ELSEWHERE` with the tests that run it, which must exist;
  every ``pip install`` line names extras the project has and packages the dev
  environment holds;
* ``json`` and ``xml`` are parsed; ``text`` is a diagram and checks nothing.

An unlabeled block, or one in another language, fails with its file and line. A
block listed in :data:`COVERED_ELSEWHERE` skips the language's own check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from snippets import (
    ROOT,
    Block,
    Command,
    all_blocks,
    commands_of,
    is_segwatch_config,
    node_exists,
    other_yaml_kind,
    pipeline_parts,
)

BLOCKS = all_blocks()
SHELL = ("console", "bash", "sh", "shell")
SEGWATCH = [sys.executable, "-m", "segwatch.collector.cli"]


@dataclass(frozen=True)
class Covered:
    """Blocks of ``file`` in ``lang`` containing ``contains`` are run or checked by ``tests``
    (pytest node ids); ``why`` says why this test does not run them itself."""

    file: str
    lang: str
    contains: str
    tests: tuple[str, ...]
    why: str

    def covers(self, block: Block) -> bool:
        return (
            str(block.path) == self.file and block.lang == self.lang and self.contains in block.text
        )


COVERED_ELSEWHERE = (
    Covered("README.md", "bash", '.venv/bin/pip install -e ".[collector]"',
            ("tests/test_install.py::test_the_collector_extra_brings_them",
             "tests/collector/test_demo.py::test_demo_finds_the_injected_segment_and_nothing_else"),
            "a fresh venv and pip resolving [collector]; the demo's own test"),
    Covered("README.md", "console", "$ segwatch demo\n",
            ("tests/collector/test_demo.py::test_demo_finds_the_injected_segment_and_nothing_else",
             "tests/collector/test_demo.py::test_demo_prints_what_the_readme_shows_and_runs_again_on_its_directory"),
            "the demo runs for seconds, and its ids and scores vary: compared line by line"),
    Covered("README.md", "console", '$ segwatch sql "SELECT count() FROM ml_model_calls"',
            ("tests/collector/test_cli.py::test_sql_reaches_a_running_collector",),
            "needs a running collector; the test checks the store line it prints"),
    Covered("README.md", "bash", '.venv/bin/pip install -e ".[dev]"',
            ("tests/test_install.py::test_the_collector_extra_brings_them",),
            "a fresh venv installing the project; the test suite is the pytest run"),
    Covered("README.md", "bash", 'pip install "segwatch[sdk]"\n',
            ("tests/test_install.py::test_installed_the_decorator_records_spans_once_an_sdk_is_set_up",),
            "installs the built wheel's [sdk] extra into a fresh venv"),
    Covered("README.md", "bash", "opentelemetry-instrument python examples/sklearn_service.py",
            ("tests/test_examples.py::test_the_readme_command_runs_the_sklearn_example",),
            "needs a collector to send to, and a venv of what the pip line brings"),
    Covered("README.md", "console", "$ segwatch serve --config segwatch.yaml",
            ("tests/collector/test_serve_cli.py::test_the_readme_shows_what_segwatch_serve_and_curl_print",),
            "a long-running server"),
    Covered("README.md", "console", "$ curl http://127.0.0.1:8123/ping",
            ("tests/collector/test_serve_cli.py::test_the_readme_shows_what_segwatch_serve_and_curl_print",),
            "needs segwatch serve running"),
    Covered("README.md", "python", 'open("predictions.csv", "w"',
            ("tests/collector/test_detect_range.py::test_the_readme_walkthrough_runs_as_shown_and_finds_brs_amounts",),
            "writes predictions.csv for the walkthrough's commands, which run in its directory"),
    Covered("README.md", "console", "$ segwatch backfill predictions.csv",
            ("tests/collector/test_detect_range.py::test_the_readme_walkthrough_runs_as_shown_and_finds_brs_amounts",),
            "writes a store and replays the detectors over the file the python block writes"),
    Covered("docs/clickhouse-server.md", "sql", "",
            ("tests/clickhouse/test_server_docs.py::test_every_statement_parses",
             "tests/clickhouse/test_server_docs.py::test_what_the_engine_can_run_runs",
             "tests/clickhouse/test_server_docs.py::test_what_needs_a_server_is_refused_here_only_for_that"),
            "users, grants and ON CLUSTER need a server: run where the engine can, parsed else"),
    Covered("docs/clickhouse-server.md", "sh", "segwatch migrate --config migrate.yaml",
            ("tests/collector/test_cli.py::test_migrate_applies_what_is_missing_and_dry_run_changes_nothing",
             "tests/collector/test_cli.py::test_migrate_dry_run_prints_only_the_pending_sql"),
            "migrate writes a store"),
    Covered("examples/otel-collector/README.md", "sh", "otelcol-contrib --config",
            ("tests/collector/test_otel_collector_example.py::test_pipelines_name_only_defined_components",
             "tests/collector/test_otel_collector_example.py::test_the_loadbalancing_exporter_has_only_documented_keys"),
            "no OpenTelemetry Collector binary here: its config is checked against the docs"),
)  # fmt: skip
"""Blocks run by other tests. An entry must match a block and name tests that exist, so
removing a covering test, or changing the block past its fingerprint, fails here."""


def _covering(block: Block) -> list[Covered]:
    return [entry for entry in COVERED_ELSEWHERE if entry.covers(block)]


def _runnable(command: Command) -> list[str] | None:
    """The command's words when this test may run it: a ``segwatch`` command that only
    reads a file of the checkout or prints help; else ``None``."""
    parts = pipeline_parts(command.line)
    if len(parts) != 1 or parts[0][0] != "segwatch" or len(parts[0]) < 2:
        return None
    argv = parts[0]
    if "--help" in argv or argv[1:] in (["--version"], ["-h"]):
        return argv
    if argv[1] in ("validate", "explain") and len(argv) >= 3 and (ROOT / argv[2]).is_file():
        return argv
    return None


def _rule(block: Block) -> str:
    """What checks this block; ``AssertionError`` saying why nothing does."""
    if covered := _covering(block):
        return "covered by " + ", ".join(test for entry in covered for test in entry.tests)
    if block.lang == "python":
        return "run"
    if block.lang == "yaml":
        if is_segwatch_config(block.text):
            return "segwatch validate"
        return other_yaml_kind(yaml.safe_load(block.text))
    if block.lang == "sql":
        return "run on the demo store"
    if block.lang in SHELL:
        commands = commands_of(block)
        assert commands, f"a {block.lang} block with no command (a console block shows `$ `)"
        for command in commands:
            assert _runnable(command) is not None, (
                f"`{command.line}` is not run by any test: this test runs only `segwatch "
                "validate|explain FILE`, `--help` and `--version`; add the block to "
                "COVERED_ELSEWHERE in tests/test_snippets.py with the test that runs it"
            )
        return "run"
    if block.lang == "json":
        json.loads(block.text)
        return "parsed"
    if block.lang == "xml":
        ET.fromstring(block.text)
        return "parsed"
    if block.lang == "text":
        return "a diagram"
    raise AssertionError(
        "an unlabeled code block: say its language (python, yaml, sql, console, bash, text, ...)"
        if not block.lang
        else f"a {block.lang!r} block: no test knows this "
        "language (python, yaml, sql, console, bash, sh, json, xml, text)"
    )


def test_the_docs_have_snippets_of_every_kind() -> None:
    languages = {block.lang for block in BLOCKS}
    assert {"python", "yaml", "sql", "bash", "console", "text"} <= languages
    assert len(BLOCKS) >= 30


def test_every_snippet_is_run_or_validated() -> None:
    problems = []
    for block in BLOCKS:
        try:
            _rule(block)
        except (AssertionError, ValueError, yaml.YAMLError, ET.ParseError) as exc:
            problems.append(f"{block.where}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("entry", COVERED_ELSEWHERE, ids=lambda e: f"{e.file}:{e.contains[:30]}")
def test_each_covered_block_is_there_and_its_tests_exist(entry: Covered) -> None:
    assert any(entry.covers(block) for block in BLOCKS), f"no {entry.lang} block in {entry.file} "
    missing = [test for test in entry.tests if not node_exists(test)]
    assert not missing, f"{entry.file}: the tests covering it are gone: {missing}"


def _blocks(kind: str) -> list[Block]:
    def wanted(block: Block) -> bool:
        if _covering(block):
            return False
        if kind == "segwatch-yaml":
            return block.lang == "yaml" and is_segwatch_config(block.text)
        if kind == "shell":
            if block.lang not in SHELL or not commands_of(block):
                return False
            return all(_runnable(c) is not None for c in commands_of(block))
        return block.lang == kind

    return [block for block in BLOCKS if wanted(block)]


def _ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


PYTHON = _blocks("python")


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_python_snippet_runs(block: Block, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", block.text], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"{block.where}: {result.stderr}"


CONFIGS = _blocks("segwatch-yaml")


@pytest.mark.parametrize("block", CONFIGS, ids=_ids(CONFIGS))
def test_segwatch_config_snippet_passes_validate(block: Block, tmp_path: Path) -> None:
    """Through the command itself, so every check ``segwatch validate`` makes counts."""
    path = tmp_path / "segwatch.yaml"
    path.write_text(block.text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    # The secrets a config names by variable (password_env, token_env) are set, as the doc
    # around it tells its reader to.
    env |= dict.fromkeys(_named_variables(yaml.safe_load(block.text)), "a-secret")
    result = subprocess.run([*SEGWATCH, "validate", str(path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, f"{block.where}: {result.stderr}"
    assert result.stdout.startswith(f"{path}: valid ("), result.stdout


def _named_variables(loaded: object) -> list[str]:
    """The environment variables a config names in its ``*_env`` keys."""
    if isinstance(loaded, dict):
        named = [v for k, v in loaded.items() if str(k).endswith("_env") and isinstance(v, str)]
        return named + [n for v in loaded.values() for n in _named_variables(v)]
    if isinstance(loaded, list):
        return [n for v in loaded for n in _named_variables(v)]
    return []


OTHER_YAML = [b for b in _blocks("yaml") if not is_segwatch_config(b.text)]


@pytest.mark.parametrize("block", OTHER_YAML, ids=_ids(OTHER_YAML))
def test_other_yaml_snippet_is_a_known_kind(block: Block) -> None:
    assert other_yaml_kind(yaml.safe_load(block.text))


SQL = _blocks("sql")


@pytest.fixture(scope="module")
def demo_client(demo_store: Path) -> Iterator[object]:
    from segwatch.clickhouse.store import open_client, parse_dsn

    client = open_client(parse_dsn(f"chdb://{demo_store}"))
    yield client
    client.close()


@pytest.mark.parametrize("block", SQL, ids=_ids(SQL))
def test_sql_snippet_runs_on_the_demo_store(block: Block, demo_client: object) -> None:
    from segwatch.clickhouse.queries import read_only_query
    from segwatch.clickhouse.sql_text import split_statements

    statements = split_statements(block.text)
    assert statements, block.where
    for statement in statements:
        # Runs: every table, column and function it names exists. Rows are not required:
        # the demo has no labels, nor a collector's window claims.
        result = read_only_query(demo_client, statement)  # type: ignore[arg-type]
        assert result.columns, f"{block.where}: no columns:\n{statement}"


SHELL_RUN = _blocks("shell")


def _shown(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _run_as_shown(block: Block) -> None:
    for command in commands_of(block):
        argv = _runnable(command)
        assert argv is not None
        result = subprocess.run([*SEGWATCH, *argv[1:]], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        if command.output:
            assert _shown(result.stdout + result.stderr) == _shown(command.output), block.where
        else:
            assert result.returncode == 0, f"{block.where}: {result.stderr}"


def test_shell_snippets_run_as_shown() -> None:
    """Every shell block no named test covers runs as shown (none, at times: each of the
    README's is covered by a test of its own); the made-up blocks show the check can fail."""
    for block in SHELL_RUN:
        _run_as_shown(block)
    version = metadata.version("segwatch")
    _run_as_shown(_made_up("console", f"$ segwatch --version\nsegwatch {version}\n"))
    with pytest.raises(AssertionError, match=r"made-up\.md:7"):
        _run_as_shown(_made_up("console", "$ segwatch --version\nsegwatch 0.0.0-not-this\n"))
    with pytest.raises(AssertionError, match=r"made-up\.md:7"):
        _run_as_shown(_made_up("bash", "segwatch validate README.md\n"))  # not a config: exit 2


def _pip_installs() -> list[tuple[Block, list[str]]]:
    found = []
    for block in BLOCKS:
        if block.lang not in SHELL:
            continue
        for command in commands_of(block):
            for part in pipeline_parts(command.line):
                words = part[2:] if part[1:2] == ["-m"] else part  # python -m pip install
                if Path(words[0]).name == "pip" and words[1:2] == ["install"]:
                    found.append((block, [w for w in words[2:] if not w.startswith("-")]))
    return found


def _extras() -> set[str]:
    """The project's extras, as its installed metadata lists them (pyproject.toml's)."""
    return set(metadata.metadata("segwatch").get_all("Provides-Extra") or [])


def test_pip_install_lines_name_real_extras_and_packages() -> None:
    """``segwatch[x]`` and ``.[x]`` name extras of pyproject.toml; other packages are ones the
    dev environment has (so the tests ran with them)."""
    installs = _pip_installs()
    assert len(installs) >= 3
    extras = _extras()
    for block, requirements in installs:
        assert requirements, block.where
        for requirement in requirements:
            named = re.fullmatch(r"(segwatch|\.)\[([\w,-]+)\]", requirement)
            if named:
                assert set(named.group(2).split(",")) <= extras, (block.where, requirement)
            else:
                assert metadata.version(requirement), (block.where, requirement)


def _made_up(lang: str, text: str) -> Block:
    return Block(Path("made-up.md"), 7, lang, text, "A heading")


def test_the_rules_on_made_up_blocks() -> None:
    """What a new doc's blocks meet: commands and shown output read from a console block,
    what this test runs itself, and the failures a reader would get, with file and line."""
    console = _made_up("console", "$ segwatch validate \\\n    README.md\nshown\n  output\n"
                                  "$ segwatch --help\n")  # fmt: skip
    assert commands_of(console) == [
        Command("segwatch validate README.md", "shown\n  output\n"),
        Command("segwatch --help", ""),
    ]
    assert _rule(console) == "run"
    assert _rule(_made_up("bash", "# a comment\nsegwatch explain docs/config.md  # why\n")) == "run"
    for text, refused in [
        ("segwatch demo\n", "`segwatch demo` is not run by any test"),
        ("segwatch validate no-such-file.yaml\n", "is not run by any test"),
        ("curl http://x && segwatch --help\n", "is not run by any test"),
    ]:
        with pytest.raises(AssertionError, match=refused):
            _rule(_made_up("sh", text))
    with pytest.raises(AssertionError, match="no command"):
        _rule(_made_up("console", "just output\n"))
    with pytest.raises(AssertionError, match="an unlabeled code block"):
        _rule(_made_up("", "x\n"))
    with pytest.raises(AssertionError, match="'toml' block: no test knows"):
        _rule(_made_up("toml", "x = 1\n"))
    with pytest.raises(AssertionError, match=r"no known kind \(top-level keys: \['amount'\]\)"):
        _rule(_made_up("yaml", "amount: {type: number}\n"))
    assert _rule(_made_up("yaml", "models: {fraud: {}}\n")) == "segwatch validate"
    rules = "groups:\n  - name: g\n    rules:\n      - {alert: A, expr: up == 0}\n"
    assert _rule(_made_up("yaml", rules)) == "Prometheus rules"
    with pytest.raises(AssertionError, match="a rule needs expr"):
        _rule(_made_up("yaml", rules.replace("expr: up == 0", "for: 5m")))


def test_a_covered_block_needs_tests_that_exist() -> None:
    assert node_exists("tests/test_snippets.py::test_the_rules_on_made_up_blocks")
    assert node_exists("tests/test_snippets.py::test_python_snippet_runs[README.md:65]")
    assert not node_exists("tests/test_snippets.py::test_gone")
    assert not node_exists("tests/no_such_file.py::test_x")
