"""StoreServer: ``segwatch serve``, the embedded store opened to many processes over HTTP.

The process owns the config's embedded store (the engine allows one process
per store directory), brings it up to date as a collector would (migrations,
store-wide settings, durable parts), then answers ClickHouse's HTTP interface
(:mod:`segwatch.collector.serve`) on ``serve.http.endpoint``. Collectors point
at it with ``storage.dsn: http://HOST:PORT/segwatch``; clickhouse-connect,
curl, Grafana and BI tools read it. The discovery file in the store's
directory names the door, so the CLI on this machine goes through it too.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from segwatch.clickhouse.migrate import apply_migrations
from segwatch.clickhouse.store import StoreError, StoreLocation, open_client, parse_dsn
from segwatch.collector.config.collector_config import CollectorConfig
from segwatch.collector.serve import ClickHouseDoor
from segwatch.collector.store.part_durability import set_part_durability
from segwatch.collector.store.settings import check_store_settings

from .discovery import discovery_path, refuse_if_held, remove_own_discovery, write_discovery

__all__ = ["StoreServer", "set_up_store"]

_logger = logging.getLogger(__name__)


def set_up_store(client: Client, config: CollectorConfig) -> list[str]:
    """Bring a store this process owns up to date: migrations, store-wide settings, durable
    parts. Returns the migrations applied now."""
    applied = apply_migrations(client)
    if applied:
        _logger.info("applied migrations: %s", ", ".join(applied))
    check_store_settings(client, config)
    set_part_durability(client, config.storage.fsync_parts)
    return applied


class StoreServer:
    """The config's embedded store, served; ``start()`` returns once the port is bound."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.location: StoreLocation = parse_dsn(config.storage.dsn)
        if not self.location.embedded:
            raise StoreError(
                f"segwatch serve opens an embedded store (storage.dsn: chdb://DIR), not "
                f"{self.location.dsn}: a ClickHouse server speaks this interface itself"
            )
        self.door: ClickHouseDoor | None = None
        self._client: Client | None = None

    @property
    def url(self) -> str:
        assert self.door is not None
        return self.door.url

    def start(self) -> None:
        refuse_if_held(self.location)
        self._client = open_client(self.location)  # holds the store for this process
        try:
            set_up_store(self._client, self.config)
            self.door = ClickHouseDoor(self.config.serve, self.location.path)
            self.door.start()
        except BaseException:
            self.stop()
            raise
        path = discovery_path(self.location)
        if path is not None:
            write_discovery(path, {"serve": self.door.url, "database": self.location.database})
        _logger.info(
            "serving the store %s at %s (ClickHouse HTTP interface, database %s)",
            self.location.path or "in memory",
            self.door.url,
            self.location.database,
        )

    def stop(self) -> None:
        path = discovery_path(self.location)
        if path is not None:
            remove_own_discovery(path)
        if self.door is not None:
            self.door.shutdown()
            self.door = None
        if self._client is not None:
            self._client.close()
            self._client = None
