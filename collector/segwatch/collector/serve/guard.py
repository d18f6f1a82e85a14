"""What the door refuses before the engine sees a statement: reaching the host.

A ClickHouse server confines ``file()`` to its ``user_files_path``, knows no
``INTO OUTFILE`` (that is the client's), and runs ``url()`` and friends only
for users granted them. The embedded engine is the process itself: ``file()``
reads any file the process can, ``INTO OUTFILE`` writes one. So through the
door, for every user, statements may not name the table functions and
functions that reach the machine's files, network or programs, nor write a
file, nor stop the engine. ``GET`` requests only read, as ClickHouse's do.
Readers are ``readonly=1`` in the engine besides.
"""

from __future__ import annotations

from segwatch.clickhouse.sql_text import tokens

from .errors import ServeError
from .statement import Statement
from .users import Account

__all__ = ["HOST_FUNCTIONS", "check_statement"]

HOST_FUNCTIONS = frozenset({
    "file", "filecluster", "url", "urlcluster", "s3", "s3cluster", "gcs", "hdfs", "hdfscluster",
    "azureblobstorage", "azureblobstoragecluster", "executable", "remote", "remotesecure",
    "cluster", "clusterallreplicas", "mysql", "postgresql", "mongodb", "jdbc", "odbc", "sqlite",
    "redis", "deltalake", "iceberg", "hudi", "paimon", "arrowflight", "ytsaurus",
})  # fmt: skip
"""Lower-cased names of the (table) functions that reach beyond the store."""

_READS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "(", "SET", "USE"}
)
_NEVER = frozenset({"BACKUP", "RESTORE"})


def check_statement(statement: Statement, account: Account, method: str) -> None:
    """Raise :class:`ServeError` if the door does not run ``statement`` for ``account``."""
    significant = tokens(statement.sql)
    if statement.kind in _NEVER:
        raise _denied(f"{statement.kind} reads or writes files where the store runs")
    if method == "GET" and statement.kind not in _READS:
        raise ServeError(
            "READONLY",
            "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
            "readonly. You should use method POST for modifying queries",
            164,
        )
    for token, following in zip(significant, [*significant[1:], None], strict=False):
        word = token.keyword()
        if word == "INTO" and following is not None and following.keyword() == "OUTFILE":
            raise _denied("INTO OUTFILE writes a file where the store runs")
        if (
            word == "SYSTEM"
            and following is not None
            and following.keyword() in ("SHUTDOWN", "KILL")
        ):
            raise _denied(f"SYSTEM {following.keyword()} would stop the store's process")
        if (
            token.kind == "word"
            and token.text.lower() in HOST_FUNCTIONS
            and following is not None
            and following.text == "("
        ):
            raise _denied(f"{token.text}() reaches beyond the store (files, network or programs)")
    del account  # every user is held to the same: readers are readonly in the engine too


def _denied(reason: str) -> ServeError:
    return ServeError("ACCESS_DENIED", f"Not allowed through segwatch serve: {reason}")
