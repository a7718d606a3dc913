"""The server's log lines on stderr: plain text for a terminal, or one JSON object per line for collectors.

JSON lines carry the fields a log record was given (``request_id``, ``model``, ``version``,
``status``, ``client``) beside time, level, logger and message, so that a failed request found in
a log can be looked up in the failure log and the other way round.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

LogFormat = Literal["text", "json"]
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS: Final = ("request_id", "model", "version", "status", "client")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None and value != "":
                doc[name] = value
        failed_at = fields.get("failed_at")
        if isinstance(failed_at, float):
            doc["failed_at"] = _iso(failed_at)  # logged a moment later, off the event loop
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "info", log_format: LogFormat = "text") -> None:
    """Send leanserve's logs (and everything else's) to stderr at ``level``, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


__all__ = ["FIELDS", "JsonFormatter", "LogFormat", "configure_logging"]
