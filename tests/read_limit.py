"""A client whose every statement may read at most so many rows, and three days of
minute aggregates to hold it to: reads of the minute rows by time must skip by the
sorting key to the 5-minute slices they need (segwatch.clickhouse.rollups,
MINUTE_ROWS_BY_KEY), not read the whole table's bucket_start column."""

from __future__ import annotations

from typing import Any


class ReadLimit:
    """A client whose every statement may read at most ``rows`` rows (the engine refuses
    more): reads of the minute rows must skip by the sorting key to the slices they need."""

    def __init__(self, client: Any, rows: int) -> None:
        self._client, self._rows = client, rows

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in ("query", "command"):
            return attribute

        def limited(*args: Any, settings: dict[str, Any] | None = None, **kwargs: Any) -> Any:
            limit = {"max_rows_to_read": self._rows, "read_overflow_mode": "throw"}
            return attribute(*args, settings={**(settings or {}), **limit}, **kwargs)

        return limited


THREE_DAYS = """
INSERT INTO ml_segment_aggregates
    (model_name, model_version, model_stage, bucket_start, segment_dim, segment_value, quantity,
     count, sampled, missing, numeric_count, sum, sum_sq, min, max, histogram)
SELECT 'limits', '1', 'serving', toDateTime({end:UInt32} - 60 * (1 + intDiv(number, 200)), 'UTC'),
       if(number % 100 = 0, '__all__', 'feature.d'),
       if(number % 100 = 0, '__all__', concat('v', toString(number % 100))),
       concat('metric.m', toString(number % 200 >= 100)),
       30 + number % 7, 30 + number % 7, 0, 30 + number % 7,
       3000 + number % 11, 300000 + number % 13, 90, 110,
       map(toInt16(16620), toFloat64(30 + number % 7))
FROM numbers(3 * 1440 * 200)
"""
