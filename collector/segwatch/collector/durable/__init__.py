"""durable: from the acknowledgement to the store (acknowledged means durable).

What enters: OTLP trace requests from ``receive/`` (still serialized, or
parsed) and log requests carrying ``ml.label`` records, through
:class:`~.processor.ModelCallProcessor` (``consume``, ``consume_logs``); at
start, the records a previous run spooled but did not store (``replay``);
dead letters an operator sends back (``requeue`` through the running
collector's API, or :mod:`.spool_admin` into the spool of a stopped one).

What leaves: to the receiver, a :class:`~.processor.ConsumeResult` once the
request is durable (in the fsynced spool; without a spool, in the store), or
:class:`~segwatch.collector.errors.PermanentError` for bad data and
:class:`~segwatch.collector.errors.RetryableError` when the spool is full or
the store is behind. Downstream, flush units: the calls ``decode/`` read from
the spooled requests, joined, aggregated by ``aggregate/`` and submitted with
their raw call rows to ``store/``'s exporter under one deduplication token
that names their spool range; label rows go straight to the exporter. On
disk: the spool directory, and the dead letters beside it.

Threads: the receiver's gRPC workers call ``consume`` and ``consume_logs``
concurrently. A request blocks its thread while the buffer has no room (up to
``backpressure_timeout``; then UNAVAILABLE, or with a spool its calls are
spilled: they stay in the spool only and are read back later), for the
spool's write and fsync (concurrent requests share one fsync), and, without a
spool or for labels, until the store has the data (up to ``store_timeout``).
A lock keeps the spool's order and the buffer's the same. One flusher thread
(``segwatch-flush``, started by ``start()``) does everything after: it takes
the flush units one at a time, aggregates and inserts each (waiting for the
exporter's answer), marks the spool, reads spilled calls back, and retries a
failed flush with backoff. The service's main thread calls ``start``,
``replay`` (before the receiver starts; it waits as long as the flusher needs
to make room) and ``shutdown`` (flushes what is left, then stops the
flusher); the local API's threads call ``flush`` and ``requeue``.

- ``processor``: :class:`ModelCallProcessor`, the receiver's consumer: decodes
  through ``decode/``, writes the spool, hands the calls to the buffer;
  replays the spool at start and takes requeued dead letters.
- ``spool``: :class:`Spool`, the write-ahead log: fsynced records, the
  ``flushed`` and ``flushing`` marks, deduplication tokens.
- ``call_buffer``: :class:`CallBuffer`, calls between acknowledgement and
  store: back-pressure, spilling, when to flush, the flusher thread.
- ``flush_unit``: the batches the buffer queues, how they join into one flush
  unit under one token, and reading spilled calls back from the spool.
- ``flush_writer``: :class:`FlushWriter`, one unit aggregated, inserted and
  marked flushed; a unit that keeps failing by no fault of the store's is
  set aside as a dead letter.
- ``dead_letters``: :class:`DeadLetters`, the set-aside flushes on disk, their
  descriptions, and their settling at start.
- ``spool_admin``: the spool directory a config gives its collector, and the
  operator's requeue of dead letters (``segwatch spool``).
- ``failpoints``: named crash and failure points a test arms through
  ``SEGWATCH_FAILPOINTS``.
"""
