"""The quarantine file: every malformed event, kept verbatim (bounded) with the reason.

Malformed input is never dropped silently: it is counted, stored here durably (fsync
before the sender gets its 400), and a digest of it is recorded in the chained audit log,
so the quarantine itself cannot be edited unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import orjson

MAX_RAW = 1 << 20
FILE_NAME = "quarantine.ndjson"


class Quarantine:
    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.count = 0

    @staticmethod
    def entry(raw: bytes, *, reason: str, endpoint: str, ts: str) -> dict[str, Any]:
        clipped = raw[:MAX_RAW]
        try:
            text: dict[str, Any] = {"raw": clipped.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"raw_b64": base64.b64encode(clipped).decode()}
        return {"v": 1, "ts": ts, "endpoint": endpoint, "reason": reason[:1000],
                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw), **text}

    def write(self, entries: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        with self._lock:
            os.write(self._fd, data)
            os.fdatasync(self._fd)
            self.count += len(entries)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
