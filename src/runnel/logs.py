"""Structured logging: JSON lines when stderr is not a terminal, carrying the request,
stream and conversation ids from context variables."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
stream_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("stream_id", default=None)
conversation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conversation_id", default=None
)
_CONTEXT = (("requestId", request_id), ("streamId", stream_id), ("conversationId", conversation_id))


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, var in _CONTEXT:
            if not hasattr(record, key):
                setattr(record, key, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, _ in _CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k, _ in _CONTEXT if getattr(record, k, None)]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            extras.extend(f"{k}={v}" for k, v in fields.items())
        return f"{line} {' '.join(extras)}" if extras else line


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
