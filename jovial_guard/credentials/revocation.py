"""The revocation list: serials that must not be used again, persisted atomically.

Checked on every use (issuer verify, agent accept, agent sweep). The file is re-read
whenever it changed on disk (inode, size or mtime), so a revocation written by the CLI or
the audit responder in another process is seen by the next check without a restart.

Two files: the base ``revoked.json`` and its journal ``revoked.json.journal``. A revocation is
appended to the journal (one JSON line, fsync'd) instead of rewriting the whole list, so
revoking costs the same however many revocations the list holds; every
:data:`COMPACT_AT` lines the journal is merged into the base. Formats (version first)::

    {"version": 1, "revoked": {"<serial>": {"user": "alice", "reason": "...", "at": 1764200000}}}
    {"v": 1, "serial": "<serial>", "user": "alice", "reason": "...", "at": 1764200000}   (journal line)

Crash orderings (a revocation, once ``add`` returned, is never lost; a later record of the
same serial never replaces an earlier one):

* append: the line is written and fsync'd before ``add`` returns. A crash mid-write leaves
  an unterminated last line: it was never acknowledged, readers ignore it and the next
  writer merges the journal into the base (dropping that line) before appending. Any other
  unreadable line fails closed.
* compaction (and ``discard``): the merged base is written (temp file, fsync, rename, fsync
  of the directory), *then* the journal is emptied. A crash between leaves entries in both
  files, which read as the same revocations.
* readers take no lock: they read the base, then the journal, then check that the base is
  still the same file; a compaction in between makes them read again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write, sync_directory
from .errors import CredentialError

REVOCATION_VERSION = 1
#: Journal lines that trigger a merge into the base (bounds a reader's re-read of the journal).
COMPACT_AT = 512


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
        self.journal = self.path.with_name(self.path.name + ".journal")
        self._lock = threading.Lock()
        self._base: dict[str, Revocation] = {}
        self._entries: dict[str, Revocation] = {}
        self._journal_lines = 0
        self._stamp: tuple[tuple[int, int, int] | None, tuple[int, int, int] | None] | None = None
        self._base_stamp: tuple[int, int, int] | None = None
        self._refresh()

    def _unreadable(self, path: Path, exc: Exception) -> CredentialError:
        # Fail closed: an unreadable revocation list makes every check fail.
        return CredentialError(f"revocation list {path} is unreadable ({exc}); refusing all grants until it is fixed")

    def _refresh(self) -> None:
        """Re-read whatever changed on disk (base or journal)."""
        for _ in range(100):
            before = (_stat(self.path), _stat(self.journal))
            if before == self._stamp:
                return
            if before[0] != self._base_stamp:
                base = self._read_base()
            else:
                base = self._base
            merged, lines = self._read_journal(dict(base))
            if _stat(self.path) == before[0]:  # no compaction while reading: a consistent view
                self._base, self._base_stamp = base, before[0]
                self._entries, self._journal_lines = merged, lines
                self._stamp = before  # a line appended since is read next time
                return
        raise CredentialError(f"revocation list {self.path} keeps changing while being read; refusing for now")

    def _read_base(self) -> dict[str, Revocation]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc: Any = json.loads(raw)
            if doc.get("version") != REVOCATION_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            return {
                serial: Revocation(serial, str(e["user"]), str(e["reason"]), int(e["at"]))
                for serial, e in doc["revoked"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._unreadable(self.path, exc) from None

    def _read_journal(self, entries: dict[str, Revocation]) -> tuple[dict[str, Revocation], int]:
        """``entries`` with the journal's records added (earlier records win); the line count."""
        try:
            raw = self.journal.read_bytes()
        except FileNotFoundError:
            return entries, 0
        lines = raw.split(b"\n")[:-1]  # an unterminated last line was never acknowledged
        for number, line in enumerate(lines, 1):
            try:
                e: Any = json.loads(line)
                if e["v"] != REVOCATION_VERSION:
                    raise ValueError(f"unsupported version {e['v']!r}")
                entry = Revocation(str(e["serial"]), str(e["user"]), str(e["reason"]), int(e["at"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise self._unreadable(self.journal, ValueError(f"line {number}: {exc}")) from None
            entries.setdefault(entry.serial, entry)
        return entries, len(lines)

    def get(self, serial: str) -> Revocation | None:
        """The revocation of ``serial``, re-reading the files if they changed."""
        with self._lock:
            self._refresh()
            return self._entries.get(serial)

    def all(self) -> list[Revocation]:
        with self._lock:
            self._refresh()
            return sorted(self._entries.values(), key=lambda r: (r.at, r.serial))

    def add(self, entries: list[Revocation]) -> None:
        """Record revocations durably (journal append + fsync) before returning."""
        if not entries:
            return
        with self._locked():
            if self._torn():
                # A crash mid-append: merge and empty the journal rather than cut the line off,
                # so every reader sees a new base (a cut-and-append could leave the journal's
                # size and mtime as a reader last saw them).
                self._compact(self._entries)
            new = [e for e in entries if e.serial not in self._entries]
            if new:
                self._append(new)
            if self._journal_lines >= COMPACT_AT:
                self._compact(self._entries)

    def discard(self, serials: set[str]) -> None:
        """Forget revocations (only for grants that have expired anyway: see Issuer.prune)."""
        if serials:
            with self._locked():
                self._compact({s: r for s, r in self._entries.items() if s not in serials})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across threads and processes (the hub, the CLI, an audit responder), with
        the files freshly read, so concurrent writers never lose each other's revocations."""
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._refresh()
            yield

    def _append(self, entries: list[Revocation]) -> None:
        data = b"".join(
            json.dumps({"v": REVOCATION_VERSION, "serial": e.serial, "user": e.user, "reason": e.reason,
                        "at": e.at}).encode()
            + b"\n"
            for e in entries
        )
        created = not self.journal.exists()
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_directory(self.path.parent)
        # Under the exclusive lock nobody else wrote since the refresh: update in memory.
        for e in entries:
            self._entries.setdefault(e.serial, e)
        self._journal_lines += len(entries)
        self._stamp = (self._base_stamp, _stat(self.journal))

    def _torn(self) -> bool:
        """Whether the journal ends in an unterminated line (a crash mid-append)."""
        try:
            with open(self.journal, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                return size > 0 and os.pread(handle.fileno(), 1, size - 1) != b"\n"
        except FileNotFoundError:
            return False

    def _compact(self, entries: dict[str, Revocation]) -> None:
        """Base replaced by ``entries`` (durable), then the journal emptied."""
        doc = {
            "version": REVOCATION_VERSION,
            "revoked": {s: {"user": r.user, "reason": r.reason, "at": r.at} for s, r in sorted(entries.items())},
        }
        atomic_write(self.path, json.dumps(doc, sort_keys=True).encode(), mode=0o600)
        if self.journal.exists():
            fd = os.open(self.journal, os.O_WRONLY)
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._base, self._entries, self._journal_lines = dict(entries), dict(entries), 0
        self._base_stamp = _stat(self.path)
        self._stamp = (self._base_stamp, _stat(self.journal))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
