"""decode: OTLP requests → model calls as columns, and ``ml.label`` records → label rows.

What enters: an OTLP ``ExportTraceServiceRequest``, as its serialized bytes
(what the receiver hands over, and what the spool replays) or as a parsed
message; an ``ExportLogsServiceRequest``, parsed; with each trace request the
oldest start time the allowed lateness admits and the
:class:`~segwatch.collector.config.limits.RequestLimits` (span count,
attributes per span, attribute size, clock skew).

What leaves: a :class:`~segwatch.collector.model_calls.ModelCallBatch` (one
row per model call, one column per quantity and per context, and the spans
the rows came from: :mod:`.raw_spans`) carrying the spans it rejected, each
counted with its reason for the OTLP partial-success answer (no or empty
``ml.model.name``, a bad ``ml.sample.weight``, too late, too early, over a
limit, a bad batch span); a
:class:`~.labels.LabelBatch` of ``ml_labels`` rows, with its rejected
records. A request of more spans than the limits allow raises
:class:`~segwatch.collector.errors.PermanentError` (the receiver answers
``INVALID_ARGUMENT``); bytes that are not a request fail the caller's
protobuf parse, which it turns into the same error.

Threads: pure functions of their arguments. No module keeps state between
calls (the constants and protobuf classes built at import are never written
after), so the receiver's gRPC workers decode concurrently, and the service's
main thread (replaying the spool) and the flusher (reading spilled calls back
from it) call the same functions, all without a lock.

Which reader runs: serialized trace requests go to the fast reader first
(:func:`~.fast_reader.scan_request`). It returns None for anything outside
the common shape, and the caller (``durable/processor.py``) then parses the
bytes with protobuf (``DecodeError`` if they are malformed) and reads the
message with the reference reader (:func:`~.reference_reader.decode_request`).
The fast reader leaves a request to the reference exactly when it has

* a batch span: an array value, or an ``ml.batch.size`` or
  ``ml.batch.columns`` key;
* an attribute value that is a map or bytes, or an attribute that is not one
  key then one value (an empty ``KeyValue``, fields out of that order);
* a key repeated within a span (of the keys it reads), or a key longer than
  :data:`~.wire.KEY_WIDTH` bytes;
* a key, a span name or a string value it reads that is not UTF-8, or a
  resource attribute (read up to ``service.name``) that does not parse;
* an irregular level above the spans (see ``request_layout``), or an
  irregular span: a field it reads (trace and span id, name, start, end)
  repeated or of another wire type, an attribute that is not a message, a
  group, field number 0, a field running past its span;
* bytes that do not parse (the reference's parse then raises);
* without the compiled loops, two distinct short strings of equal hash (a
  collision is checked, never assumed away).

Parsed messages always go to the reference reader. Both readers give the
same batch for every request the fast reader reads: a differential test
(tests/collector/test_span_scan.py) holds them to it, with and without the
compiled loops. One difference is by design: the fast reader checks the
UTF-8 of what it reads only, so a bad string in an attribute it skips
(``http.method``, say) does not make it refuse a request that protobuf's
parse, and so the reference reader, would refuse.

- ``fast_reader``: :func:`scan_request`, the fast reader: upb down to each
  span's raw bytes, then model calls from whole arrays; the entry point.
- ``request_layout``: :func:`read_layout`, where each span sits in the request's
  bytes and the resource and scope it came under (the levels above the spans
  walked like the spans; a field number protobuf refuses, a resource or a scope
  given twice, a field of another wire type are left to the reference).
- ``span_table``: :class:`SpanTable`, every span's fields read at once (ids,
  name, times, where each attribute sits), compiled or in numpy lock-step.
- ``key_values``: :class:`KeyValues`, every attribute's key and value located
  and typed at once; numbers read in place, strings factorized per request.
- ``wire``: protobuf's wire format with numpy: varints at many positions,
  byte slices factorized; :class:`NotSimple`, "leave it to the reference".
- ``reference_reader``: :func:`decode_request`, the reference reader: parsed
  messages, span by span; defines the results, rejection reasons included.
- ``batch_spans``: :func:`decode_batch_span`, one span carrying many rows
  (arrays and/or ``ml.batch.columns``), validated whole before any row lands.
- ``batch_columns``: :func:`decode_columns`, the reader of
  ``ml.batch.columns`` (docs/batch-columns.md); the writer is
  ``segwatch.instrumentation.batch_columns``.
- ``raw_spans``: the spans a batch's rows came from, as each reader holds them,
  parsed back only for the few ``storage.traces`` writes to ``otel_traces``.
- ``labels``: :func:`decode_labels`, ``ml.label`` log records → ``ml_labels``
  rows (:class:`LabelRows`).
"""
