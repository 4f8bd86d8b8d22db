"""Keeps each admitted spawn's hardening record where the dashboard can read it.

Why a file: the spawn hook's record (``spawner.guard_record``: seccomp, read-only root,
capabilities, network, storage grant, decision id, revision) lives in the hub process; the
dashboard is a separate service. ``hardening_recorder(dir)`` is a
``c.JovialGuard.spawn_listeners`` entry writing ``<dir>/<user>[:<server>].json``
atomically (0600, no secrets: the storage record holds a serial, never a token). A record
outlives its server, so the dashboard only shows records of servers the Hub API reports
as active. Written atomically but not fsync'd: a record only describes a running server,
and no server outlives the power loss that could lose its record's last write (the
dashboard then shows no server for it); a crash of the hub process loses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

VERSION = 1


def _file_name(user: str, server: str) -> str:
    key = json.dumps([user, server])  # unambiguous for any characters
    return key.encode().hex() + ".json"


def write_record(directory: Path, *, user: str, server: str, record: dict[str, Any],
                 now: float | None = None) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"v": VERSION, "time": time.time() if now is None else now, "user": user, "server": server,
           "record": record}
    path = directory / _file_name(user, server)
    atomic_write(path, json.dumps(doc, sort_keys=True, default=str).encode(), mode=0o600, durable=False)
    return path


def read_records(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(user, server): record}``; unreadable or foreign files are skipped."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("record"), dict):
            continue
        out[(str(doc.get("user")), str(doc.get("server") or ""))] = doc["record"]
    return out


def hardening_recorder(directory: str | Path) -> Callable[[Any, dict[str, Any]], None]:
    """A spawn listener ``(spawner, record)`` for ``c.JovialGuard.spawn_listeners``."""
    target = Path(directory)

    def listener(spawner: Any, record: dict[str, Any]) -> None:
        write_record(target, user=str(spawner.user.name), server=str(getattr(spawner, "name", "") or ""),
                     record=record)

    return listener
