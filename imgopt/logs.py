"""Logging: one format for the access log, imgopt's own logs and uvicorn's, on one stream.

Every line is a JSON object (``--log-format json``, the default) or a line of text
(``--log-format text``), written to stderr. A JSON line always has ``level``, ``time``
(ISO 8601, UTC), ``logger`` and ``message``, and ``request_id`` when the line was logged while
a request was being answered (the id the client sent in X-Request-Id, or a generated one, also
sent back in the response). Access-log lines (logger ``imgopt.access``) add the request's
fields: method, path, query, status, bytes, duration_ms, cache, client, user_agent.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("json", "text")

#: The id of the request being answered in this context (set by metrics.ObserveMiddleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("imgopt_request_id", default=None)

#: Libraries whose info lines are one per upstream request: logged only at --log-level debug.
QUIET_BELOW_DEBUG = ("httpx", "httpcore")

#: The attribute of a LogRecord that carries an access-log line's fields.
FIELDS = "imgopt_fields"


def iso_time(created: float) -> str:
    """'2026-12-06T23:01:02.123Z' for a time.time() value."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request_id(record: logging.LogRecord) -> str | None:
    rid = getattr(record, "request_id", None)
    return rid if isinstance(rid, str) else None


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record logged while a request is answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname.lower(),
            "time": iso_time(record.created),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = _request_id(record)
        if rid is not None:
            line["request_id"] = rid
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update((k, v) for k, v in fields.items() if k not in line)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> [request_id=...]``, then any access-log fields."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{iso_time(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        rid = _request_id(record)
        if rid is not None:
            text += f" request_id={rid}"
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            text += "".join(f" {k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in fields.items()
                            if k not in ("method", "path", "status"))
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_current = ("info", "json")


def current() -> tuple[str, str]:
    """The (level, format) the last configure() set: worker processes log the same way."""
    return _current


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record (imgopt's, uvicorn's, libraries') through one handler on ``stream``
    (stderr by default), in ``fmt``, at ``level`` and above. Returns the handler."""
    global _current
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected json or text")
    _current = (level, fmt)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers: no handlers of their own, so their lines come through the one above
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    # httpx logs every request imgopt makes for an original at info: shown with debug only
    for name in QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.captureWarnings(True)
    return handler
