"""The latest attestation of each server, for the dashboard ("attested 3 s ago: ok").

Why a file of its own: the audit log holds every check, but the dashboard needs only the
newest per server and must not scan the log for it. The loop replaces ``attestation.json``
atomically after each pass; :func:`read_status` is the query API readers use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

VERSION = 1
FILE_NAME = "attestation.json"


@dataclass(frozen=True)
class ServerAttestation:
    user: str
    server: str
    time: float
    status: str
    drifts: tuple[dict[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "server": self.server, "time": self.time, "status": self.status,
                "drifts": list(self.drifts)}


def write_status(directory: Path, entries: list[ServerAttestation], *, now: float) -> Path:
    path = directory / FILE_NAME
    doc = {"v": VERSION, "time": now, "servers": [e.to_json() for e in entries]}
    atomic_write(path, json.dumps(doc, sort_keys=True).encode(), mode=0o600, durable=False)
    return path


def read_status(directory: Path) -> dict[tuple[str, str], ServerAttestation]:
    """``{(user, server): latest}``; empty when the loop has not written yet (or the file is
    foreign or torn: a reader never raises for it)."""
    try:
        doc = json.loads((directory / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("servers"), list):
        return {}
    out: dict[tuple[str, str], ServerAttestation] = {}
    for item in doc["servers"]:
        try:
            entry = ServerAttestation(user=str(item["user"]), server=str(item.get("server") or ""),
                                      time=float(item["time"]), status=str(item["status"]),
                                      drifts=tuple(dict(d) for d in item.get("drifts") or ()))
        except (KeyError, TypeError, ValueError):
            continue
        out[(entry.user, entry.server)] = entry
    return out


def describe(entry: ServerAttestation | None, *, now: float) -> str:
    """The dashboard's words: ``attested 4 s ago: ok`` / ``... drift: ruleset (detail)``."""
    if entry is None:
        return "not attested yet"
    age = max(0, int(now - entry.time))
    text = f"attested {age} s ago: {entry.status}"
    if entry.drifts:
        text += " (" + "; ".join(str(d.get("detail", "")) for d in entry.drifts)[:300] + ")"
    return text
