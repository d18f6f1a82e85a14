"""The fenced code blocks of the project's docs, found and sorted by what checks them.

Docs: ``README.md``, ``docs/*.md`` and every ``examples/**/README.md``. A block is
found with its file, the line of its opening fence, its language (the fence's first
word) and the heading above it. ``tests/test_snippets.py`` holds every block to a rule
by language; this module only reads and classifies, it runs nothing.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$")


def doc_files() -> list[Path]:
    """Every Markdown file whose snippets must be run or validated, relative to ``ROOT``."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found += sorted((ROOT / "examples").glob("**/README.md"))
    return [path.relative_to(ROOT) for path in found]


@dataclass(frozen=True)
class Block:
    """One fenced code block: ``lang`` is the fence's first word (``""`` when unlabeled)."""

    path: Path
    line: int
    lang: str
    text: str
    heading: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one file (relative to ``ROOT``), in order; an unclosed fence is
    a block running to the end of the file, as CommonMark reads it."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            if found := _HEADING.match(lines[i]):
                heading = found.group("title")
            i += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        info = opening.group("info").strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing.group("fence").startswith(fence) and not closing["info"].strip():
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        lang = info.split()[0].lower() if info else ""
        blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n", heading))
        i = j + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    """A fenced line without the fence's own indentation (a block inside a list item)."""
    cut = len(line) - len(line.lstrip(" \t"))
    return line[min(indent, cut) :]


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks_of(path)]


# -- YAML: a segwatch config, or a known other kind ---------------------------


def segwatch_sections() -> set[str]:
    from segwatch.collector.config.collector_config import COLLECTOR_CONFIG_SCHEMA

    return set(COLLECTOR_CONFIG_SCHEMA.fields)


def is_segwatch_config(text: str) -> bool:
    """A mapping whose top-level keys are all sections of a segwatch config."""
    loaded = yaml.safe_load(text)
    return isinstance(loaded, dict) and bool(loaded) and set(loaded) <= segwatch_sections()


def other_yaml_kind(loaded: Any) -> str:
    """Which kind of (non-segwatch) YAML this is, after checking what a reader of that kind
    requires; ``AssertionError`` naming what is wrong, or that the kind is unknown."""
    assert isinstance(loaded, dict) and loaded, "not a mapping"
    keys = set(loaded)
    if "service" in keys and keys <= {"receivers", "processors", "exporters", "extensions",
                                      "connectors", "service"}:  # fmt: skip
        for name, pipeline in loaded["service"].get("pipelines", {}).items():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    assert component in loaded.get(kind, {}), f"{name}: no {kind} {component}"
        return "OpenTelemetry Collector config"
    if keys == {"groups"}:
        for group in loaded["groups"]:
            assert group.get("name") and group.get("rules"), "a rule group needs name and rules"
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), "a rule is an alert or a record"
                assert str(rule.get("expr", "")).strip(), "a rule needs expr"
        return "Prometheus rules"
    if "scrape_configs" in keys and keys <= {"global", "scrape_configs", "rule_files",
                                             "alerting", "remote_write"}:  # fmt: skip
        assert all(job.get("job_name") for job in loaded["scrape_configs"]), "job_name"
        return "Prometheus config"
    if "apiVersion" in keys and "kind" in keys:
        assert isinstance(loaded.get("metadata"), dict), "a Kubernetes object needs metadata"
        return "Kubernetes object"
    if "apiVersion" in keys and keys & {"datasources", "providers", "deleteDatasources",
                                        "contactPoints", "policies"}:  # fmt: skip
        return "Grafana provisioning"
    if "route" in keys and "receivers" in keys:
        return "Alertmanager config"
    raise AssertionError(f"YAML of no known kind (top-level keys: {sorted(keys)}): neither a "
                         "segwatch config nor an OTel Collector, Prometheus, Alertmanager, "
                         "Grafana provisioning or Kubernetes file")  # fmt: skip


# -- shell: commands, and the output a console block shows ----------------------


@dataclass(frozen=True)
class Command:
    """One command line as typed (continuations joined), and the output shown under it
    (``None`` in a ``bash``/``sh`` block, which shows no output)."""

    line: str
    output: str | None


def commands_of(block: Block) -> list[Command]:
    """A ``console`` block's ``$ `` lines with the output under each; a ``bash``/``sh``
    block's lines, comments dropped. Lines ending in ``\\`` continue on the next."""
    prompted = block.lang == "console"
    commands: list[Command] = []
    pending = ""
    for raw in block.text.splitlines():
        if pending:
            pending = pending[:-1].rstrip() + " " + raw.strip()
        elif prompted and raw.startswith("$ "):
            pending = raw[2:].strip()
        elif prompted:
            if commands:  # output of the command above
                commands[-1] = Command(commands[-1].line, f"{commands[-1].output}{raw}\n")
            continue
        elif raw.strip() and not raw.lstrip().startswith("#"):
            pending = raw.strip()
        if pending and not pending.endswith("\\"):
            commands.append(Command(pending, "" if prompted else None))
            pending = ""
    return commands


def words(line: str) -> list[str]:
    """A command line's words, comments dropped (``shlex``: quotes as a shell reads them)."""
    return shlex.split(line, comments=True)


def pipeline_parts(line: str) -> list[list[str]]:
    """The simple commands of a line joined by ``&&``, ``||``, ``;`` or ``|``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


# -- pytest node ids that must exist ----------------------------------------------


def node_exists(node_id: str) -> bool:
    """Whether ``tests/x.py::test_name`` (or ``::Class::test_name``; a ``[param]`` suffix
    ignored) names a test function defined in that file."""
    path, _, rest = node_id.partition("::")
    file = ROOT / path
    if not rest or not file.is_file():
        return False
    names = rest.split("[", 1)[0].split("::")
    tree = ast.parse(file.read_text(encoding="utf-8"))
    scope: list[ast.stmt] = tree.body
    for name in names[:-1]:
        classes = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == name]
        if not classes:
            return False
        scope = classes[0].body
    return any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == names[-1]
        for n in scope
    )
