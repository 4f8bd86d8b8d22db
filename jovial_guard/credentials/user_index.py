"""Per-user index of stored grants: which serials a user's live grant can be under.

The spawn path asks "which of this user's grants are live?" (one live grant per user). The
store answers it from the grant files' headers, which means reading every grant ever issued
and not yet pruned. This index keeps, per user, the serials worth looking at, so the answer
costs a few files however long the store's history is.

Layout, inside the grant directory (``*.grant`` listings do not see it)::

    .by-user/<user>/<serial>     empty file: "a grant of <user> may be stored under <serial>"
    .by-user/.complete           written after a full rebuild from the store

The store files and the revocation list stay the source of truth. The index only has to be
a *superset*: every stored grant of a user has an entry under that user. A reader checks each
candidate against its grant file (present, header names the user, not expired) and the
revocation list, so an entry can never make a grant live; a missing entry could hide a live
grant from "revoke the previous grant", which is why the orders below keep the superset.

Orders (what a crash at any point leaves):

* issue / renew / rewrap (``GrantStore.put``): entry created, *then* the grant file written
  (fsync'd). Crash between: an entry without a file, which names no grant (ignored, removed
  by the next rebuild once older than :data:`GRACE`). Entries are not fsync'd: after a power
  loss an entry may be gone while its grant file survived, so every process rebuilds the
  index from the store on its first use (:meth:`UserIndex.rebuild`) before answering.
* revoke: the revocation is persisted (journal line, fsync'd; :mod:`.revocation`), then the
  revoked grants' entries are dropped. Crash between: an entry of a revoked grant, which a
  later reader finds revoked and drops. Either the revocation is on disk (refused
  everywhere) or ``revoke`` never returned; no entry ever overrides it, and a dropped entry
  only means "not live". Revoking by user reads the user's entries only.
* expiry: a reader drops the entry of an expired grant. Expiry is final (renew refuses an
  expired grant), so the entry is never needed again.
* prune: grant file deleted, then its entry (a crash between leaves an entry without a file).
* index deleted or ``.complete`` missing while running: the next reader rebuilds it.

A grant file copied into the store by hand while a process runs is indexed at that process's
next start (or when ``.complete`` is removed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..atomic import atomic_write, ensure_private_dir
from .grant import GrantHeader, is_safe_name

INDEX_DIR = ".by-user"
MARKER = ".complete"
#: An entry without its grant file is kept this long by a rebuild: another process may be
#: between creating the entry and writing the grant.
GRACE = 300


class UserIndex:
    """The ``.by-user`` directory of one grant store; safe for threads within one process."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self._lock = threading.Lock()
        self._rebuilt = False

    def _user_dir(self, user: str) -> Path | None:
        return self.directory / user if is_safe_name(user) else None

    def add(self, user: str, serial: str) -> None:
        """Record that ``user`` may have a grant under ``serial`` (idempotent)."""
        user_dir = self._user_dir(user)
        if user_dir is None:
            return  # a header naming no valid user is never live for anyone
        try:
            fd = os.open(user_dir / serial, os.O_CREAT | os.O_WRONLY, 0o600)
        except FileNotFoundError:
            ensure_private_dir(self.directory)
            ensure_private_dir(user_dir)
            fd = os.open(user_dir / serial, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)

    def drop(self, user: str, serial: str) -> None:
        user_dir = self._user_dir(user)
        if user_dir is not None:
            try:
                os.unlink(user_dir / serial)
            except FileNotFoundError:
                pass

    def candidates(self, user: str, headers: Callable[[], Iterable[tuple[str, GrantHeader | None]]]) -> list[str]:
        """Serials that may hold a grant of ``user`` (a superset of the live ones), sorted.

        ``headers`` lists the whole store; it is called only to rebuild the index (first use
        in this process, or the index was deleted).
        """
        self.ensure(headers)
        user_dir = self._user_dir(user)
        if user_dir is None:
            return []
        try:
            return sorted(name for name in os.listdir(user_dir) if not name.startswith("."))
        except FileNotFoundError:
            return []

    def ensure(self, headers: Callable[[], Iterable[tuple[str, GrantHeader | None]]]) -> None:
        if self._rebuilt and (self.directory / MARKER).exists():
            return
        with self._lock:
            if not (self._rebuilt and (self.directory / MARKER).exists()):
                self.rebuild(headers())
                self._rebuilt = True

    def rebuild(self, headers: Iterable[tuple[str, GrantHeader | None]]) -> None:
        """Bring the index in step with the store: add every stored grant under its header's
        user, drop entries filed under another user, and entries without a grant file once
        older than :data:`GRACE`. Then mark the index complete."""
        ensure_private_dir(self.directory)
        owner: dict[str, str | None] = {s: (str(h.get("user")) if h is not None else None) for s, h in headers}
        cutoff = self.clock() - GRACE
        for user_dir in self.directory.iterdir():
            if user_dir.name.startswith(".") or not user_dir.is_dir():
                continue
            for entry in user_dir.iterdir():
                serial = entry.name
                if serial.startswith("."):
                    continue
                if serial in owner:
                    if owner[serial] != user_dir.name:
                        entry.unlink(missing_ok=True)
                else:
                    try:
                        if entry.stat().st_mtime < cutoff:
                            entry.unlink(missing_ok=True)
                    except FileNotFoundError:
                        pass
        for serial, user in owner.items():
            if user is not None:
                self.add(user, serial)
        atomic_write(self.directory / MARKER, b"1\n", mode=0o600)
