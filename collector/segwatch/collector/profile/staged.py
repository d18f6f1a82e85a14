"""Replacing a profile whole: a load is written aside, then swapped in.

A profile's rows are summed where they share a key (``ml_baseline_aggregates`` is
an AggregatingMergeTree), so a new load cannot be written beside the old one
under the same name. It is written under a staged name no reader asks for (the
detectors and the quantile buckets ask for a profile by its name), and only
once every row is in are the old rows deleted and the new ones copied under the
profile's name. A load that fails part way (a bad chunk, an interrupted
command) leaves the old profile as it was; while a load runs, the detectors
compare with the old one, not with half of the new.
"""

from __future__ import annotations

import logging
import uuid

from clickhouse_connect.driver.client import Client

__all__ = ["delete_profile", "delete_staged", "staged_name", "swap_in"]

_TABLE = "ml_baseline_aggregates"
_SYNC = {"mutations_sync": 2}  # the rows are gone when the call returns
_STAGED = "\x1fload "  # between a profile's name and a load's random part

_logger = logging.getLogger(__name__)


def staged_name(name: str) -> str:
    """A name for a load of profile ``name`` that no reader asks for (a unit separator
    and a random part: no config or command names a profile that way)."""
    return f"{name}{_STAGED}{uuid.uuid4().hex}"


def delete_staged(client: Client, name: str, model: str, version: str) -> None:
    """Delete every staged load of profile ``name`` of ``model`` at ``version``: the one a
    load just finished with, or those a killed load left. Logged, not raised, when the
    store cannot: the load's own outcome (its error, if any) is what the caller reports."""
    try:
        client.command(
            f"ALTER TABLE {_TABLE} DELETE WHERE startsWith(baseline_name, {{prefix:String}}) "
            "AND model_name = {model:String} AND model_version = {version:String}",
            parameters={"prefix": name + _STAGED, "model": model, "version": version},
            settings=_SYNC,
        )
    except Exception:
        _logger.warning("could not delete the staged rows of profile %r of %s (version %r)",
                        name, model, version, exc_info=True)  # fmt: skip


def delete_profile(client: Client, name: str, model: str, version: str) -> None:
    """Delete the rows of profile ``name`` of ``model`` at ``version``."""
    client.command(
        f"ALTER TABLE {_TABLE} DELETE WHERE baseline_name = {{name:String}} "
        "AND model_name = {model:String} AND model_version = {version:String}",
        parameters={"name": name, "model": model, "version": version},
        settings=_SYNC,
    )


def swap_in(client: Client, staged: str, name: str, model: str, version: str) -> None:
    """Profile ``name`` of ``model`` at ``version`` becomes the rows loaded as ``staged``
    (which stay: the caller deletes them, :func:`delete_staged`). Two statements: the
    old rows deleted, the staged ones copied under ``name``; only a failure between the
    two leaves the profile empty (loading again mends it)."""
    delete_profile(client, name, model, version)
    client.command(
        # The filter in a subquery: beside REPLACE, WHERE would read the replaced name.
        f"INSERT INTO {_TABLE} SELECT * REPLACE ({{name:String}} AS baseline_name) "
        f"FROM (SELECT * FROM {_TABLE} WHERE baseline_name = {{staged:String}} "
        "AND model_name = {model:String} AND model_version = {version:String})",
        parameters={"name": name, "staged": staged, "model": model, "version": version},
        settings={"async_insert": 0},
    )
