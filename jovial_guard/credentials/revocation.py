"""The revocation list: serials that must not be used again, persisted atomically.

Checked on every use (issuer verify, agent accept, agent sweep). The file is re-read
whenever it changed on disk (inode, size or mtime), so a revocation written by the CLI or
the audit responder in another process is seen by the next check without a restart.

Format (version first)::

    {"version": 1, "revoked": {"<serial>": {"user": "alice", "reason": "...", "at": 1764200000}}}
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .errors import CredentialError

REVOCATION_VERSION = 1


@dataclass(frozen=True)
class Revocation:
    serial: str
    user: str
    reason: str
    at: int


class RevocationList:
    """File-backed set of revoked serials; safe for threads within one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, Revocation] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            doc: Any = json.loads(self.path.read_bytes())
            if doc.get("version") != REVOCATION_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            entries = {
                serial: Revocation(serial, str(e["user"]), str(e["reason"]), int(e["at"]))
                for serial, e in doc["revoked"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: an unreadable revocation list makes every check fail.
            raise CredentialError(
                f"revocation list {self.path} is unreadable ({exc}); refusing all grants until it is fixed"
            ) from None
        self._entries, self._stamp = entries, stamp

    def get(self, serial: str) -> Revocation | None:
        """The revocation of ``serial``, re-reading the file if it changed."""
        with self._lock:
            self._refresh()
            return self._entries.get(serial)

    def all(self) -> list[Revocation]:
        with self._lock:
            self._refresh()
            return sorted(self._entries.values(), key=lambda r: (r.at, r.serial))

    def add(self, entries: list[Revocation]) -> None:
        """Record revocations and persist (temp file + fsync + rename) before returning."""
        if entries:
            self._update(lambda current: {**{e.serial: e for e in entries}, **current})

    def discard(self, serials: set[str]) -> None:
        """Forget revocations (only for grants that have expired anyway: see Issuer.prune)."""
        if serials:
            self._update(lambda current: {s: r for s, r in current.items() if s not in serials})

    def _update(self, change: Callable[[dict[str, Revocation]], dict[str, Revocation]]) -> None:
        """Read-modify-write under an exclusive lock file, so concurrent writers (the hub, the
        CLI, an audit responder) never lose each other's revocations."""
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stamp = None
            self._refresh()
            merged = change(dict(self._entries))
            doc = {
                "version": REVOCATION_VERSION,
                "revoked": {s: {"user": r.user, "reason": r.reason, "at": r.at} for s, r in sorted(merged.items())},
            }
            atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)
            self._entries = merged
            st = os.stat(self.path)
            self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
