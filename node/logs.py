"""Log lines an operator can search (`[log] format` and `level`).

`text`: one line for a person, `TIME LEVEL LOGGER: MESSAGE`. `json`: one JSON object a line,
`{"time", "level", "logger", "message"}`, and for a request's line its fields
(`request_id`, `method`, `route`, `status`, `duration_ms`). Either way a line logged while a
request is handled carries that request's id, the one its response has in X-Request-Id.
What a line says is the caller's care: route patterns, never paths, queries or bodies.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from node.config import Section

# The id of the request being handled (node.api.access sets it around each request).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)  # fmt: skip
REQUEST_FIELDS = ("request_id", "method", "route", "status", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose DEBUG lines hold customers' data: peewee logs every query with its values.
QUIET = {"peewee": logging.INFO}


class RequestContext(logging.Filter):
    """Stamps a record logged while a request is handled with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The plain line, ` id=REQUEST_ID` at its end when it belongs to a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """logging's own text (`2026-05-01 12:00:00,123`, local time), its second's part
        made once a second: every request logs a line."""
        second = int(record.created)
        if self._second[0] != second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, stamp)
        return self.default_msec_format % (self._second[1], record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line (newlines inside a message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }  # fmt: skip
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(settings: Section) -> None:
    """Log to stderr in `settings.format` from `settings.level` up (unless something, such
    as a test harness, set up logging first)."""
    # No format here shows a record's thread or process: not looked up for every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(RequestContext())
    logging.basicConfig(level=settings.level.upper(), handlers=[handler])
    for name, level in QUIET.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logger.getEffectiveLevel()))
