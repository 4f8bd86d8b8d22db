"""`AuditService`: the one place events become durable audit records.

Every intake (HTTP, bulk, engine stream, hub events, decision listener) calls
:meth:`AuditService.record` / :meth:`record_many`; they attribute each event, stamp it,
append it through group commit and return only once it is on disk. Then metrics are counted
and the responder (if any) is told about the committed event. Malformed input goes to
:meth:`quarantine`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .attribution import Attributor
from .events import encode_body
from .log import AuditLog, RecoveryReport, iso_now
from .metrics import AuditMetrics
from .quarantine import Quarantine
from .registry import SpawnRegistry
from .writer import GroupCommitWriter

log = logging.getLogger(__name__)


class EventObserver(Protocol):
    """Told about each committed event (the responder); must not block."""

    def observe(self, event: dict[str, Any], seq: int) -> None: ...


class AuditService:
    def __init__(
        self,
        directory: str | Path,
        *,
        key: Ed25519PrivateKey,
        registry: SpawnRegistry | None = None,
        metrics: AuditMetrics | None = None,
        max_file_bytes: int = 64 * 1024 * 1024,
        checkpoint_every: int = 10_000,
        checkpoint_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        bulk_workers: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.bulk_workers = bulk_workers
        self._pool: ProcessPoolExecutor | None = None
        self.clock = clock
        self.log = AuditLog(self.directory, key=key, max_file_bytes=max_file_bytes,
                            checkpoint_every=checkpoint_every, checkpoint_interval=checkpoint_interval,
                            clock=clock)
        self.writer = GroupCommitWriter(self.log)
        self.registry = registry
        self.attributor = Attributor(registry)
        self.metrics = metrics or AuditMetrics()
        self.quarantine_file = Quarantine(self.directory)
        self.observers: list[EventObserver] = []
        self.recovery: RecoveryReport | None = None

    async def start(self) -> RecoveryReport:
        """Open (recovering a torn tail), start group commit, and log the start itself."""
        self.recovery = await asyncio.to_thread(self.log.open)
        self.writer.start()
        event: dict[str, Any] = {"kind": "system", "source": "audit", "rule": "audit log opened",
                                 "priority": "Informational", "user": None, "server": None,
                                 "attribution": "system", "summary": "audit service started",
                                 "fields": {"records": self.recovery.size}}
        if self.recovery.torn_bytes or self.recovery.torn_checkpoint_bytes:
            event.update(rule="audit log recovered", priority="Warning",
                         summary="; ".join(self.recovery.notes),
                         fields={"records": self.recovery.size, "torn_bytes": self.recovery.torn_bytes,
                                 "torn_file": self.recovery.torn_file, "saved_to": self.recovery.saved_to})
        await self.record(event)
        return self.recovery

    def _body(self, event: dict[str, Any], ts: str | None = None) -> bytes:
        if "attribution" not in event:
            self.attributor.attribute(event)
        return encode_body(event, ts or iso_now(self.clock()))

    async def record(self, event: dict[str, Any]) -> int:
        """Attribute, append durably, count, notify observers. Returns the sequence number."""
        seq = await self.writer.append(self._body(event))
        self._after(event, seq)
        return seq

    async def record_many(self, events: list[dict[str, Any]]) -> int:
        """As :meth:`record` for a batch (one group commit); returns the first sequence number."""
        if not events:
            return self.log.size + 1
        ts = iso_now(self.clock())
        body = self._body
        first = await self.writer.append_many([body(e, ts) for e in events])
        for offset, event in enumerate(events):
            self._after(event, first + offset)
        return first

    def _after(self, event: dict[str, Any], seq: int) -> None:
        kind = event.get("kind", "")
        self.metrics.event(kind, str(event.get("rule")), str(event.get("priority")), event.get("user"))
        if kind == "decision":
            fields = event.get("fields") or {}
            allowed = bool(fields.get("allowed"))
            self.metrics.decisions.labels(str(allowed).lower(), event.get("source", "")).inc()
            if not allowed:
                reasons = fields.get("reasons") or [{}]
                self.metrics.denials.labels(str(reasons[0].get("rule", "unspecified"))).inc()
        elif kind == "response":
            fields = event.get("fields") or {}
            self.metrics.responses.labels(str(fields.get("action")), str(fields.get("outcome"))).inc()
        for observer in self.observers:
            try:
                observer.observe(event, seq)
            except Exception:  # an observer must never lose an event
                log.exception("audit observer failed")

    async def record_prepared(self, bodies: list[bytes], leaves: list[bytes], events: list[dict[str, Any]]) -> int:
        """Append bodies already encoded and leaf-hashed by bulk workers (prepare.py)."""
        if not bodies:
            return self.log.size + 1
        first = await self.writer.append_many(bodies, leaves)
        if len(events) == len(bodies):
            for offset, event in enumerate(events):
                self._after(event, first + offset)
        else:  # only decisions came back (no observers): metrics for them, no sequence needed
            for event in events:
                self._after(event, 0)
        return first

    def registry_path(self) -> str | None:
        return str(self.registry.path) if self.registry is not None else None

    async def quarantine(self, raws: list[tuple[bytes, str]], *, endpoint: str) -> None:
        """Keep malformed inputs (raw bytes, reason) durably, and chain a digest of each."""
        ts = iso_now(self.clock())
        entries = [Quarantine.entry(raw, reason=reason, endpoint=endpoint, ts=ts) for raw, reason in raws]
        await asyncio.to_thread(self.quarantine_file.write, entries)
        self.metrics.quarantined.labels(endpoint).inc(len(entries))
        await self.record_many([
            {"kind": "intake", "source": endpoint, "rule": "malformed event quarantined",
             "priority": "Notice", "user": None, "server": None, "attribution": "unattributed",
             "summary": e["reason"], "fields": {"sha256": e["sha256"], "bytes": e["bytes"]}}
            for e in entries
        ])

    def bulk_pool(self) -> ProcessPoolExecutor | None:
        """Worker processes for bulk preparation (started on first use; None if disabled)."""
        if self.bulk_workers < 1:
            return None
        if self._pool is None:
            from .prepare import init_worker

            self._pool = ProcessPoolExecutor(
                max_workers=self.bulk_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(self.registry_path(),),
            )
        return self._pool

    def reset_bulk_pool(self) -> None:
        """Drop a failed pool; the next large bulk starts a fresh one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        await self.writer.close()
        self.quarantine_file.close()
