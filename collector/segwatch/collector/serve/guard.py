"""What the door refuses before the engine sees a statement: reaching the host.

A ClickHouse server confines ``file()`` to its ``user_files_path``, knows no
``INTO OUTFILE`` or ``FROM INFILE`` (those are the client's), and runs ``url()``
and friends only for users granted them. The embedded engine is the process
itself: ``file()``, ``filesystem()`` and ``FROM INFILE`` read any file the
process can, ``INTO OUTFILE`` writes one, a dictionary's ``HTTP`` source or a
``Kafka`` table reaches the network. So through the door, for every user:

- a statement may use, as a table function, a table or database engine or a
  dictionary source, only what keeps to the store (:data:`STORE_LOCAL`);
  every other name the engine knows (:func:`reaching_names`) is refused, and
  so are :data:`HOST_FUNCTIONS`: new engine versions add ways out, and an
  allow-list does not grow with them;
- a name counts however it is written: ``file(``, ``FILE (``, ```file`(``,
  ``"file"(``, and after ``ENGINE =`` with no brackets at all;
- SQL held in strings is read too where the engine runs it (a dictionary's
  ``QUERY '...'``, ``additional_table_filters``): every string of a statement
  other than a query or an insert, every string after ``SETTINGS``, the
  values of URL settings and, in those statements, query parameters;
- no ``INTO OUTFILE``, ``FROM INFILE``, ``BACKUP``/``RESTORE``, nor ``SYSTEM
  SHUTDOWN``/``KILL``, nor the settings whose values are paths or URLs
  (:data:`PATH_SETTINGS`); ``GET`` and ``HEAD`` requests only read, as
  ClickHouse's do; a reader ends no query (``KILL QUERY``);
- one statement per request (:mod:`.statement` refuses a second after ``;``).

A user's budget (``max_execution_time``, ``max_memory_usage``) holds in the SQL
too: ``SET`` and ``SETTINGS`` may lower it, not lift it. Readers are
``readonly=1`` in the engine besides, which refuses every setting change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from segwatch.clickhouse.sql_text import Token, tokens

from .errors import ServeError
from .statement import Statement
from .users import Account

__all__ = [
    "HOST_FUNCTIONS",
    "PATH_SETTINGS",
    "READING_METHODS",
    "STORE_LOCAL",
    "check_setting_values",
    "check_statement",
    "reaching_names",
]

STORE_LOCAL = frozenset({
    # table functions
    "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generaterandom", "generateseries",
    "generate_series", "values", "sqlstandardvalues", "view", "viewifpermitted", "viewexplain",
    "merge", "input", "null", "loop", "format", "dictionary", "fuzzjson", "fuzzquery",
    "mergetreeindex", "mergetreeanalyzeindexes", "mergetreeanalyzeindexesuuid",
    "mergetreecodecblockcounts", "mergetreeprojection", "mergetreetextindex", "timeseriesdata",
    "timeseriesmetrics", "timeseriestags", "timeseriessamples", "timeseriesmetricfamilies",
    "timeseriesselector", "prometheusquery", "prometheusqueryrange",
    # table engines
    "mergetree", "aggregatingmergetree", "coalescingmergetree", "collapsingmergetree",
    "graphitemergetree", "replacingmergetree", "summingmergetree",
    "versionedcollapsingmergetree", "memory", "log", "tinylog", "stripelog", "buffer", "set",
    "join", "materializedview", "timeseries", "alias",
    # database engines
    "atomic", "ordinary", "lazy",
})  # fmt: skip
"""Lower-cased names of the table functions, table, database engines and dictionary sources
that keep to the store (``log`` and ``format`` are ordinary functions too)."""

HOST_FUNCTIONS = frozenset({
    "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss",
    "cosn", "hdfs", "hdfscluster", "azureblobstorage", "azureblobstoragecluster", "executable",
    "executable_pool", "remote", "remotesecure", "cluster", "clusterallreplicas", "mysql",
    "postgresql", "mongodb", "jdbc", "odbc", "sqlite", "redis", "deltalake", "iceberg", "hudi",
    "paimon", "arrowflight", "ytsaurus", "python", "http", "https", "clickhouse", "kafka",
    "rabbitmq", "nats", "s3queue", "azurequeue", "filelog", "distributed", "disk",
})  # fmt: skip
"""Names refused whatever the engine lists: what reaches the machine's files, network or
programs (``disk(...)`` builds a disk on any path)."""

PATH_SETTINGS = frozenset({
    "format_schema", "format_schema_source", "format_template_resultset", "format_template_row",
    "output_format_schema", "input_format_record_errors_file_path", "rename_files_after_processing",
    "format_avro_schema_registry_url", "url_base",
})  # fmt: skip
"""Settings whose values are paths or URLs the engine reads, writes or renames (a format's
schema or template file, an error log, files renamed after reading): refused for every user,
in the URL, in ``SET`` and in ``SETTINGS``."""

READING_METHODS = frozenset({"GET", "HEAD"})
"""Requests that only read, as ClickHouse holds a GET to ``readonly``."""

_READS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "(", "SET", "USE"}
)
_QUERIES = frozenset({"SELECT", "WITH", "(", "INSERT", "SHOW", "DESCRIBE", "DESC", "EXISTS"})
"""Statements whose strings are data (``WHERE t LIKE '%url(%'``), not SQL the engine runs."""
_NEVER = frozenset({"BACKUP", "RESTORE"})
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "v": "\v"}
_NESTING = 8  # strings inside strings read at most this deep


def reaching_names(known: Iterable[str]) -> frozenset[str]:
    """The names to refuse: ``known`` (the engine's table functions, table and database
    engines, dictionary sources) but :data:`STORE_LOCAL`, and :data:`HOST_FUNCTIONS`."""
    return frozenset(name.lower() for name in known) - STORE_LOCAL | HOST_FUNCTIONS


def check_statement(
    statement: Statement,
    account: Account,
    method: str,
    reaching: frozenset[str],
    parameters: Mapping[str, str],
) -> None:
    """Raise :class:`ServeError` if the door does not run ``statement`` for ``account``."""
    if statement.kind in _NEVER:
        raise _denied(f"{statement.kind} reads or writes files where the store runs")
    if statement.kind == "KILL" and account.user.readonly:
        raise _denied("a reader cannot end queries (KILL): they may be another user's")
    if method in READING_METHODS and statement.kind not in _READS:
        raise ServeError(
            "READONLY",
            "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
            "readonly. You should use method POST for modifying queries",
        )
    significant = tokens(statement.sql)
    strings_are_sql = statement.kind not in _QUERIES
    _check_tokens(significant, reaching, strings_are_sql, 0)
    _check_budget(significant, account, statement.kind == "SET")
    if strings_are_sql or any(token.keyword() == "SETTINGS" for token in significant):
        for value in parameters.values():  # a {name:String} may stand where SQL is read
            _check_tokens(tokens(value), reaching, True, 1)


def check_setting_values(settings: Mapping[str, str], reaching: frozenset[str]) -> None:
    """Refuse URL settings whose values hold SQL that reaches the host
    (``additional_table_filters={'t': 'a IN (SELECT * FROM file(...))'}``)."""
    for name, value in settings.items():
        if name.lower() in PATH_SETTINGS:
            raise _path_setting(name)
        _check_tokens(tokens(value), reaching, True, 1)


def _check_tokens(
    significant: list[Token], reaching: frozenset[str], strings_are_sql: bool, nesting: int
) -> None:
    in_settings = False
    for index, token in enumerate(significant):
        after = significant[index + 1] if index + 1 < len(significant) else None
        word = token.keyword()
        in_settings = in_settings or word == "SETTINGS"
        if word == "INTO" and after is not None and after.keyword() == "OUTFILE":
            raise _denied("INTO OUTFILE writes a file where the store runs")
        if word == "FROM" and after is not None and after.keyword() == "INFILE":
            raise _denied("FROM INFILE reads a file where the store runs")
        if word == "SYSTEM" and after is not None and after.keyword() in ("SHUTDOWN", "KILL"):
            raise _denied(f"SYSTEM {after.keyword()} would stop the store's process")
        name = _name(token)
        if name.lower() in PATH_SETTINGS and after is not None and after.text == "=":
            raise _path_setting(name)
        if name.lower() in reaching and (_called(after) or _engine(significant, index)):
            raise _denied(f"{name}() reaches beyond the store (files, network or programs)")
        if token.kind == "string" and (strings_are_sql or in_settings):
            if nesting >= _NESTING:
                raise _denied("strings nested too deep to read")
            _check_tokens(tokens(_unquote(token.text)), reaching, True, nesting + 1)


def _check_budget(significant: list[Token], account: Account, is_set: bool) -> None:
    """``SET`` and ``SETTINGS`` clauses keep within the user's budget."""
    budget = account.budget()
    if not budget:
        return
    in_settings = is_set
    for index, token in enumerate(significant[:-2]):
        in_settings = in_settings or token.keyword() == "SETTINGS"
        name = token.text.lower() if token.kind in ("word", "ident") else ""
        if in_settings and name in budget and significant[index + 1].text == "=":
            account.check_setting(name, _unquote(significant[index + 2].text))


def _name(token: Token) -> str:
    """The name a word or quoted identifier stands for; "" for anything else."""
    if token.kind == "word":
        return token.text
    if token.kind == "ident":
        return _unquote(token.text)
    return ""


def _called(after: Token | None) -> bool:
    return after is not None and after.kind == "punct" and after.text == "("


def _engine(significant: list[Token], index: int) -> bool:
    """Whether the token at ``index`` names an engine: ``ENGINE = X`` or ``ENGINE X``."""
    previous = significant[index - 1] if index else None
    if previous is not None and previous.text == "=" and index >= 2:
        previous = significant[index - 2]
    return previous is not None and previous.keyword() == "ENGINE"


def _unquote(text: str) -> str:
    """A string's or quoted identifier's content, its escapes read as the engine reads them."""
    if text.startswith("$"):  # a heredoc: $tag$...$tag$
        tag_end = text.index("$", 1) + 1
        return text[tag_end : len(text) - tag_end]
    if len(text) < 2 or text[0] not in "'\"`":
        return text
    quote, body = text[0], text[1:-1]
    body = body.replace(quote * 2, quote)
    return _ESCAPE.sub(_unescape, body)


def _unescape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped.startswith("x") and len(escaped) == 3:
        return chr(int(escaped[1:], 16))
    return _ESCAPES.get(escaped, escaped)


def _path_setting(name: str) -> ServeError:
    return _denied(f"the setting {name} names a file or URL where the store runs")


def _denied(reason: str) -> ServeError:
    return ServeError("ACCESS_DENIED", f"Not allowed through segwatch serve: {reason}")
