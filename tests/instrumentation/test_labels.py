"""log_label emits an ml.label log record through the real OTel logs SDK."""

from __future__ import annotations

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from segwatch.instrumentation import log_label


@pytest.fixture
def logs():  # type: ignore[no-untyped-def]
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_label_record_follows_the_convention(logs) -> None:
    provider, exporter = logs
    log_label("tx-1", model="fraud", is_fraud=True, amount_lost=12.5, timestamp=123,
              logger_provider=provider)  # fmt: skip
    (finished,) = exporter.get_finished_logs()
    record = finished.log_record
    assert record.event_name == "ml.label"
    assert record.timestamp == 123
    assert dict(record.attributes) == {
        "ml.prediction.id": "tx-1",
        "ml.model.name": "fraud",
        "ml.label.is_fraud": True,
        "ml.label.amount_lost": 12.5,
    }


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("",), {"model": "m", "y": 1}, "prediction_id"),
        (("p",), {"model": "", "y": 1}, "model"),
        (("p",), {"model": "m"}, "at least one label"),
        (("p",), {"model": "m", "y": None}, "missing"),
    ],
)
def test_bad_arguments_are_refused(logs, args, kwargs, message) -> None:
    provider, exporter = logs
    with pytest.raises(ValueError, match=message):
        log_label(*args, logger_provider=provider, **kwargs)
    assert exporter.get_finished_logs() == ()
