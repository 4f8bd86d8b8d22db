"""Structured logs: one JSON object per line, for the webhook and the cluster audit.

Log collectors (Loki, Elasticsearch, Cloud Logging) index fields, not sentences, so each
record carries its message plus whatever the caller passes as ``extra={"fields": {...}}``
(decision id, policy revision, request uid, ...). Per-user views of admission come from
these logs and the decision log, never from metric labels.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

#: The version of the record layout, first in every line.
FORMAT_VERSION = 1


class JsonFormatter(logging.Formatter):
    """Format a LogRecord as one JSON line: v, time, level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(str(key), value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure(level: str = "INFO", *, json_format: bool = True) -> None:
    """Root logging: JSON lines on stderr (or the classic text format when asked)."""
    handler = logging.StreamHandler()
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
