"""The append-only audit log: group-committed, fsynced, hash-chained, checkpointed, rotated.

Why each property:
- *Durable acknowledgement*: :meth:`AuditLog.append_many` writes a whole batch with one
  ``write`` and returns only after ``fdatasync``; callers acknowledge an event only after
  that. Batching many events per sync (group commit) is what keeps throughput high.
- *Crash safety*: one writer appends with ``O_APPEND``, so a crash can leave at most one torn
  record at the very end of the newest file. :meth:`open` finds it (incomplete line or bad
  hash at the tail), moves its bytes to ``torn/`` for inspection, truncates, and reports it;
  anything earlier that fails to verify is corruption and opening refuses (fail closed).
- *Tamper evidence*: records are chained (see :mod:`.record`) and every ``checkpoint_every``
  records or ``checkpoint_interval`` seconds a signed Merkle checkpoint is appended to
  ``checkpoints.log`` (see :mod:`.checkpoint`).
- *Rotation*: when a file passes ``max_file_bytes`` the next record starts a new numbered
  file; the chain and sequence numbers simply continue.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .checkpoint import (
    Checkpoint,
    InvalidCheckpoint,
    key_id,
    parse_checkpoint,
    sign,
    verify_signature,
)
from .errors import AuditWriteFailed as AuditWriteFailed  # re-exported: the writer's errors
from .errors import LogCorrupted as LogCorrupted
from .merkle import CompactRange
from .record import GENESIS, RecordFormatError, build_line, expected_chain, parse_line

FILE_PATTERN = re.compile(r"^audit-(\d{6})\.log$")
CHECKPOINT_FILE = "checkpoints.log"


def file_index(path: Path | str) -> int:
    """The number of a log file (``audit-000042.log`` -> 42); -1 if the name is not one."""
    match = FILE_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else -1


def file_name(index: int) -> str:
    return f"audit-{index:06d}.log"


def log_files(directory: Path) -> list[Path]:
    """The log's files in chain order."""
    found = []
    for path in directory.iterdir() if directory.exists() else ():
        match = FILE_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def iso_now(now: float) -> str:
    return _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RecoveryReport:
    """What :meth:`AuditLog.open` found: where the log stands and what it repaired."""

    size: int = 0
    torn_bytes: int = 0
    torn_file: str | None = None
    saved_to: str | None = None
    torn_checkpoint_bytes: int = 0
    notes: list[str] = field(default_factory=list)


class AuditLog:
    """Single-writer append-only log in ``directory``. Not async: run it in one thread."""

    def __init__(
        self,
        directory: str | Path,
        *,
        key: Ed25519PrivateKey,
        max_file_bytes: int = 64 * 1024 * 1024,
        checkpoint_every: int = 10_000,
        checkpoint_interval: float = 1.0,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_file_bytes < 4096:
            raise ValueError("max_file_bytes must be at least 4096")
        if checkpoint_every < 1 or checkpoint_interval <= 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_interval > 0 seconds")
        self.directory = Path(directory)
        self.key = key
        self.max_file_bytes = max_file_bytes
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.durable = durable
        self.clock = clock
        self.size = 0
        self.head = GENESIS
        self.frontier = CompactRange()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._cp_fd: int | None = None
        self._file_index = 0
        self._offset = 0
        self._cp_size = 0
        self._cp_time = 0.0
        self._broken = False

    # -- opening and recovery -------------------------------------------------------------
    def open(self) -> RecoveryReport:
        """Recover the tail, position for appending, and say what was found."""
        with self._lock:
            return self._open()

    def _open(self) -> RecoveryReport:
        self.directory.mkdir(parents=True, exist_ok=True)
        report = RecoveryReport()
        cp = self._last_checkpoint(report)
        files = log_files(self.directory)
        if cp is not None:
            self.size, self.head = cp.size, cp.head
            self.frontier = CompactRange(cp.size, cp.frontier)
            start_index = file_index(cp.file)
            start_offset = cp.offset
            if self.directory / cp.file not in files:
                raise LogCorrupted(f"signed checkpoint at record {cp.size} names {cp.file}, which is missing")
            if (self.directory / cp.file).stat().st_size < cp.offset:
                raise LogCorrupted(
                    f"{cp.file} is shorter than the signed checkpoint at record {cp.size} says: truncated"
                )
            self._cp_size = cp.size
        else:
            start_index, start_offset = (file_index(files[0]), 0) if files else (1, 0)
        for path in files:
            index = file_index(path)
            if index < start_index:
                continue
            offset = start_offset if index == start_index else 0
            last = path == files[-1]
            self._scan_file(path, offset, last=last, report=report)
        if files:
            self._file_index = file_index(files[-1])
        else:
            self._file_index = 1
        self._open_file(self._file_index)
        self._cp_fd = os.open(self.directory / CHECKPOINT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._cp_time = self.clock()
        report.size = self.size
        return report

    def _last_checkpoint(self, report: RecoveryReport) -> Checkpoint | None:
        path = self.directory / CHECKPOINT_FILE
        if not path.exists():
            return None
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A checkpoint torn by a crash: it was never relied on; drop it.
            report.torn_checkpoint_bytes = len(data) - end
            report.notes.append(f"dropped a torn checkpoint of {len(data) - end} bytes")
            with open(path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
            data = data[:end]
        if not data:
            return None
        last_line = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
        try:
            cp = parse_checkpoint(last_line)
            verify_signature(cp, self.key.public_key())
        except InvalidCheckpoint as exc:
            raise LogCorrupted(f"the last checkpoint does not verify ({exc}); refusing to append") from exc
        return cp

    def _scan_file(self, path: Path, offset: int, *, last: bool, report: RecoveryReport) -> None:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        pos = 0
        n = len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            line = data[pos:] if nl < 0 else data[pos:nl + 1]
            bad: str | None = None
            if nl < 0:
                bad = "incomplete record"
            else:
                try:
                    rec = parse_line(line)
                except RecordFormatError as exc:
                    bad = str(exc)
                else:
                    if rec.seq != self.size + 1:
                        bad = f"sequence {rec.seq} where {self.size + 1} was expected"
                    elif rec.chain != expected_chain(self.head, rec.seq, rec.leaf):
                        bad = "chain hash mismatch"
            if bad is not None:
                tail_end = n if nl < 0 else nl + 1
                if last and tail_end == n:
                    self._cut_torn_tail(path, offset + pos, data[pos:], report)
                    return
                raise LogCorrupted(
                    f"{path.name} at byte {offset + pos} (record {self.size + 1}): {bad}; "
                    "run `jovial-guard audit verify` for details"
                )
            self.size = rec.seq
            self.head = rec.chain
            self.frontier.append(rec.leaf)
            pos = nl + 1

    def _cut_torn_tail(self, path: Path, at: int, torn: bytes, report: RecoveryReport) -> None:
        torn_dir = self.directory / "torn"
        torn_dir.mkdir(exist_ok=True)
        saved = torn_dir / f"{path.name}.{at}.bin"
        saved.write_bytes(torn)
        with open(path, "r+b") as fh:
            fh.truncate(at)
            os.fsync(fh.fileno())
        _fsync_dir(torn_dir)
        report.torn_bytes = len(torn)
        report.torn_file = path.name
        report.saved_to = str(saved)
        report.notes.append(f"recovered a torn record of {len(torn)} bytes at the end of {path.name}")

    def _open_file(self, index: int) -> None:
        path = self.directory / file_name(index)
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = os.fstat(self._fd).st_size
        self._file_index = index
        if created:
            _fsync_dir(self.directory)

    # -- appending ------------------------------------------------------------------------
    def append_many(self, bodies: list[bytes], leaves: list[bytes | None] | None = None) -> int:
        """Append a batch; return the sequence number of its first record once it is on disk.

        ``leaves`` (``record.leaf_of`` of each body) may be passed when computed elsewhere.
        """
        with self._lock:
            if self._fd is None:
                raise AuditWriteFailed("the audit log is not open")
            if self._broken:
                raise AuditWriteFailed("an earlier write failed half-way; restart the service to recover the log")
            if leaves is not None and len(leaves) != len(bodies):
                raise ValueError("one leaf per body")
            first = self.size + 1
            seq, head = self.size, self.head
            lines = []
            computed: list[bytes] = []
            for index, body in enumerate(bodies):
                seq += 1
                line, leaf, head = build_line(seq, body, head, leaves[index] if leaves is not None else None)
                lines.append(line)
                computed.append(leaf)
            data = b"".join(lines)
            self._write_durably(data)
            self.size, self.head = seq, head
            append = self.frontier.append
            for leaf in computed:
                append(leaf)
            self._offset += len(data)
            if self._offset >= self.max_file_bytes:
                os.close(self._fd)
                self._open_file(self._file_index + 1)
            self._maybe_checkpoint_locked()
            return first

    def _write_durably(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise AuditWriteFailed("the audit log is not open")
        written = 0
        view = memoryview(data)
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
            if self.durable:
                os.fdatasync(fd)
        except OSError as exc:
            # Take back whatever part reached the file so the tail stays a whole record.
            try:
                os.ftruncate(fd, self._offset)
            except OSError:
                # The tail may now hold a partial record: appending after it would break the
                # chain. Refuse every further append; a restart recovers the torn tail.
                self._broken = True
            raise AuditWriteFailed(f"could not write the audit log: {exc}") from exc

    # -- checkpoints ----------------------------------------------------------------------
    def maybe_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self._maybe_checkpoint_locked()

    def _maybe_checkpoint_locked(self) -> Checkpoint | None:
        pending = self.size - self._cp_size
        if pending <= 0:
            return None
        if pending >= self.checkpoint_every or self.clock() - self._cp_time >= self.checkpoint_interval:
            return self._checkpoint_locked()
        return None

    def checkpoint(self) -> Checkpoint | None:
        """Sign and store a checkpoint now (no-op if nothing new since the last one)."""
        with self._lock:
            if self.size == self._cp_size and self._cp_size:
                return None
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> Checkpoint:
        if self._cp_fd is None:
            raise AuditWriteFailed("the audit log is not open")
        now = self.clock()
        cp = sign(
            Checkpoint(
                size=self.size,
                root=self.frontier.root(),
                head=self.head,
                frontier=tuple(self.frontier.nodes),
                file=file_name(self._file_index),
                offset=self._offset,
                ts=iso_now(now),
                key_id=key_id(self.key.public_key()),
            ),
            self.key,
        )
        line = cp.to_line()
        try:
            os.write(self._cp_fd, line)
            if self.durable:
                os.fdatasync(self._cp_fd)
        except OSError as exc:
            raise AuditWriteFailed(f"could not write a checkpoint: {exc}") from exc
        self._cp_size = self.size
        self._cp_time = now
        return cp

    def close(self) -> None:
        """Checkpoint what is pending and close the files."""
        with self._lock:
            if self._fd is None:
                return
            if self.size > self._cp_size:
                self._checkpoint_locked()
            os.close(self._fd)
            self._fd = None
            if self._cp_fd is not None:
                os.close(self._cp_fd)
                self._cp_fd = None

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_bodies(directory: str | Path) -> Iterator[tuple[int, bytes]]:
    """Every complete record's ``(seq, body)`` in order, without verifying (see verify.py)."""
    for path in log_files(Path(directory)):
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n") or not line.startswith(b"v1 "):
                    continue
                entry = line[68:-1]
                space = entry.find(b" ")
                if space > 0 and entry[:space].isdigit():
                    yield int(entry[:space]), entry[space + 1:]
