"""JsonLogFormatter: one JSON object per log line, for log pipelines (``--log-format json``)."""

from __future__ import annotations

import datetime as dt
import json
import logging

__all__ = ["JsonLogFormatter"]


class JsonLogFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "thread"[, "exception"]}``, UTC ISO time.

    The message is formatted with its arguments first, so a value in it stays
    data inside the JSON string: a newline or a quote in an attribute cannot
    forge a second log line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
