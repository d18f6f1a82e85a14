"""ClickHouse's HTTP interface over the embedded store: ``segwatch serve``.

Enters: HTTP requests from ClickHouse clients (clickhouse-connect, curl,
Grafana, BI tools, other segwatch collectors with an ``http://`` DSN).
Leaves: the engine's own output bytes, summaries and errors, as a ClickHouse
server sends them. Threads: one per connection, one worker per running query;
engine handles are per request or per ClickHouse session, locked while used.

- :mod:`.server` the door and one request's path through it
- :mod:`.listener` the socket: a thread per connection, TLS, a client gone
- :mod:`.request` URL parameters, credentials, the body (chunked, compressed)
- :mod:`.statement` where an INSERT's statement ends and its data begins
- :mod:`.guard` what no user may run through the door (it would reach the host)
  and the budget a user's SQL may not lift
- :mod:`.users` accounts, passwords from the environment, budgets
- :mod:`.engine` engine handles, sessions, running and killing queries
- :mod:`.errors` errors with ClickHouse's codes, names and HTTP statuses
"""

from .server import ClickHouseDoor

__all__ = ["ClickHouseDoor"]
