"""StoreAccess: how the CLI reaches the store — directly, or through a running collector.

An embedded store is locked by the process that opens it. While a collector
runs on it, ``segwatch sql``, ``anomalies`` and ``detect`` go through the
collector's local API (found through the discovery file the collector writes
into the store directory, mode 0600, with the API's token); while ``segwatch
serve`` holds it, through its ClickHouse HTTP interface (as user
``$CLICKHOUSE_USER`` with ``$CLICKHOUSE_PASSWORD`` when set, else ``default``);
otherwise they open the store themselves. The token goes only to a loopback address, or to
the address the config's ``api.endpoint`` names: a discovery file pointing
elsewhere is refused. Readers pass ``create=False``: a DSN naming no store is
an error, never a new, empty store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.detection import DetectorSpec
from segwatch.clickhouse.migrate import apply_migrations, require_migrated
from segwatch.clickhouse.queries import (
    AnomalyFilter,
    QueryResult,
    list_anomalies,
    read_only_query,
    run_query,
)
from segwatch.clickhouse.read_only import check_read_only
from segwatch.clickhouse.store import (
    StoreError,
    StoreLocation,
    StoreLockedError,
    open_client,
    open_existing_client,
    parse_dsn,
    redact_dsn,
)
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.config.endpoints import is_loopback, parse_endpoint
from segwatch.collector.config.network import API_TOKEN_ENV, ApiConfig
from segwatch.collector.profile.profiles import Progress, load_profile, read_table
from segwatch.collector.service.analyst_queries import AnalystQueries, QueryBudget
from segwatch.collector.service.detect import DetectionResult, detect_table
from segwatch.collector.service.discovery import discovery_path, read_discovery, refuse_if_locked

__all__ = [
    "ApiAccess",
    "ApiError",
    "DirectAccess",
    "StoreAccess",
    "describe_store",
    "open_access",
    "open_for_migration",
]


class StoreAccess(Protocol):
    store: str
    """Which store this reaches, and how: one line for people, without a password."""

    def load_baseline(self, path: str, model: str, version: str, name: str) -> int: ...
    def sql(self, query: str) -> QueryResult: ...
    def anomalies(self, selection: AnomalyFilter) -> QueryResult: ...
    def detect(self, at: dt.datetime | None) -> DetectionResult: ...
    def close(self) -> None: ...


class DirectAccess:
    """The store opened by this process."""

    def __init__(
        self,
        client: Client,
        specs: list[DetectorSpec] | None = None,
        config: CollectorConfig | None = None,
        store: str = "",
        location: StoreLocation | None = None,
    ) -> None:
        self.store = store
        self.location = location  # where to open the budgeted query session
        self.client = client
        self.specs = specs
        self.config = config
        self.progress: Progress | None = None

    def load_baseline(self, path: str, model: str, version: str, name: str) -> int:
        return load_profile(self.client, read_table(path), model=model, version=version,
                            name=name, config=self.config, progress=self.progress)  # fmt: skip

    def sql(self, query: str) -> QueryResult:
        """The query on a read-only session of its own, on the config's budget (as through a
        collector: ``api.max_execution_time`` and the rest)."""
        if self.location is None:
            return read_only_query(self.client, query)
        if str(self.client.command("SELECT getSetting('readonly')")).strip() not in ("0", ""):
            # A reader's login (a server's, or segwatch serve's): its server holds it to
            # readonly and to its own budget, and refuses the settings a budget would set.
            check_read_only(query)
            return run_query(self.client, query)
        budget = QueryBudget.of(self.config.api if self.config else ApiConfig())
        (settings,) = dataclasses.replace(budget, concurrent=1).sessions()
        # An existing store, opened without CREATE DATABASE: a reader may not create one.
        session = open_existing_client(self.location, **settings)
        try:
            queries = AnalystQueries([(settings["log_comment"], session)], self.client, budget)
            return queries.run(query)
        finally:
            session.close()

    def anomalies(self, selection: AnomalyFilter) -> QueryResult:
        return list_anomalies(self.client, selection)

    def detect(self, at: dt.datetime | None) -> DetectionResult:
        with self.detector_helpers() as helpers:
            return detect_table(self.client, at, self.specs, helpers)

    @contextlib.contextmanager
    def detector_helpers(self) -> Iterator[list[Client]]:
        """A second session of the store for the detectors' queries, as the collector's
        scheduler has (two queries at once: see ``run_detector_group``); none without a
        location (a client handed over) or for an in-memory store (a session of its own
        would open another, empty one)."""
        if self.location is None or self.location.in_memory:
            yield []
            return
        helper = open_existing_client(self.location)
        try:
            yield [helper]
        finally:
            helper.close()

    def close(self) -> None:
        self.client.close()


class ApiError(RuntimeError):
    """The collector's local API answered with an error."""


class ApiAccess:
    """The store of a running collector, through its local API."""

    def __init__(
        self, base_url: str, timeout: float = 120.0, token: str | None = None, store: str = ""
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.store = store or f"(through the collector at {self.base_url})"
        self._token = token if token is not None else os.environ.get(API_TOKEN_ENV)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        upload: tuple[str, str] | None = None,
    ) -> Any:
        """``body`` goes as JSON; ``upload`` (a file, its Content-Type) as the file's bytes."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if upload is not None:
            headers["Content-Type"] = upload[1]
            headers["Content-Length"] = str(os.path.getsize(upload[0]))
            with open(upload[0], "rb") as stream:  # http.client sends it block by block
                return self._send(urllib.request.Request(
                    self.base_url + path, data=stream, method=method, headers=headers
                ))  # fmt: skip
        if body is not None:
            headers["Content-Type"] = "application/json"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise ApiError(message) from exc

    def requeue(self, names: list[str]) -> int:
        """Send dead letters back through the running collector; the calls they hold."""
        return int(self._call("POST", "/api/v1/spool/requeue", {"names": names})["calls"])

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/v1/status")
        return result

    def sql(self, query: str) -> QueryResult:
        return QueryResult.from_json(self._call("POST", "/api/v1/sql", {"query": query}))

    def load_baseline(self, path: str, model: str, version: str, name: str) -> int:
        """Upload the file's bytes; the collector never reads a path it is sent."""
        kind = "application/vnd.apache.parquet" if path.endswith(".parquet") else "text/csv"
        query = urlencode({"model": model, "version": version, "name": name})
        return int(self._call("POST", f"/api/v1/baseline?{query}", upload=(path, kind))["rows"])

    def anomalies(self, selection: AnomalyFilter) -> QueryResult:
        return QueryResult.from_json(self._call("POST", "/api/v1/anomalies", selection.to_json()))

    def detect(self, at: dt.datetime | None) -> DetectionResult:
        body = {"at": at.isoformat() if at else None}
        return DetectionResult.from_json(self._call("POST", "/api/v1/detect", body))

    def close(self) -> None:
        pass


def describe_store(location: StoreLocation) -> str:
    """The store as people name it: its absolute directory, or the DSN without password."""
    if location.embedded:
        return f"chdb://{location.path}" if location.path else "chdb://memory"
    return redact_dsn(location.dsn)


def _trusted_api(url: str, config: CollectorConfig | None) -> bool:
    """May the token go to ``url``: a loopback address, or the one the config names?"""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if is_loopback(parts.hostname):
        return True
    if config is None:
        return False
    host, port = parse_endpoint(config.api.endpoint)
    return (parts.hostname, parts.port) == (host, port)


def open_access(
    dsn: str,
    specs: list[DetectorSpec] | None = None,
    config: CollectorConfig | None = None,
    create: bool = True,
) -> StoreAccess:
    """Reach the store: through a running collector's API if there is one, else directly.

    ``specs`` are the detectors ``detect`` runs on a directly opened store; a
    running collector runs its own configured ones. ``create=False`` (readers)
    raises :class:`StoreNotFoundError` when the DSN names no existing store.
    """
    location = parse_dsn(dsn)
    store = describe_store(location)
    info = read_discovery(location)
    if info is not None and "api" not in info and info.get("serve"):
        return _through_door(location, str(info["serve"]), specs, config, store)
    if info is not None:
        url = str(info.get("api"))
        if not _trusted_api(url, config):
            raise StoreError(
                f"{discovery_path(location)} names the collector's API at {url}, neither a "
                "loopback address nor the config's api.endpoint: not sending it the token"
            )
        token_env = config.api.token_env if config is not None else API_TOKEN_ENV
        token = info.get("token") or os.environ.get(token_env)
        # The CLI waits for a query as long as the collector lets it run, and then some.
        timeout = 120.0 if config is None else max(120.0, config.api.max_execution_time + 30.0)
        return ApiAccess(url, timeout=timeout, token=token,
                         store=f"{store} (through the collector at {url})")  # fmt: skip
    refuse_if_locked(location)  # before the engine prints its own refusal
    client = open_client(location) if create else open_existing_client(location)
    try:
        if location.embedded:
            apply_migrations(client, exclusive=True)  # locked by this process: no one writes
        else:
            require_migrated(client)  # shared: `segwatch migrate` is its one runner
    except BaseException:
        client.close()
        raise
    return DirectAccess(client, specs, config, store=store, location=location)


def _through_door(
    location: StoreLocation,
    url: str,
    specs: list[DetectorSpec] | None,
    config: CollectorConfig | None,
    store: str,
) -> DirectAccess:
    """The embedded store ``segwatch serve`` holds, through its door at ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not is_loopback(parts.hostname or ""):
        raise StoreError(
            f"{discovery_path(location)} names segwatch serve at {url}, not a loopback "
            "address: not sending it credentials"
        )
    user = os.environ.get("CLICKHOUSE_USER", "")
    password = os.environ.get("CLICKHOUSE_PASSWORD", "")
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    door = parse_dsn(f"{parts.scheme}://{login}{parts.netloc}/{location.database}")
    try:
        client = open_existing_client(door)
    except Exception as exc:
        if "AUTHENTICATION_FAILED" not in str(exc):
            raise
        raise StoreError(
            f"segwatch serve at {url} refused the login {user or 'default'!r}: set "
            "$CLICKHOUSE_USER and $CLICKHOUSE_PASSWORD to one of its serve.users"
        ) from None
    return DirectAccess(client, specs, config, store=f"{store} (through segwatch serve at "
                        f"{url})", location=door)  # fmt: skip


def open_for_migration(location: StoreLocation, create: bool) -> Client:
    """The store, opened by this process for ``segwatch migrate``.

    An embedded store a collector holds is refused (:class:`StoreLockedError`):
    that collector applied its migrations when it started, and a newer
    version's are applied when that version's collector starts, or by this
    command once the collector is stopped. The collector is named first: with
    ``serve.in_collector`` it opens a door too, but it is still the collector
    that holds the store. A store ``segwatch serve`` holds is refused naming
    the DSN that migrates it through the door. ``create=False`` (a dry run)
    raises :class:`StoreNotFoundError` when there is no store.
    """
    info = read_discovery(location)
    if info is not None and "api" not in info and "serve" in info:
        raise StoreLockedError(  # segwatch serve: its collectors write through its door
            f"the embedded store {location.path} is served by segwatch serve at "
            f"{info['serve']} (pid {info.get('pid')}); migrate it through that door, as its "
            f"collectors reach it: storage.dsn: {info['serve']}/{location.database}"
        )
    if info is not None:  # a collector, with or without a door of its own
        raise StoreLockedError(
            f"the embedded store {location.path} is held by the collector running at "
            f"{info.get('api')} (pid {info.get('pid')}), which applied the migrations it "
            "knows when it started; stop it to run segwatch migrate"
        )
    refuse_if_locked(location)
    return open_client(location) if create else open_existing_client(location)
