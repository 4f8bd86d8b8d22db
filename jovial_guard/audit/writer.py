"""Group commit: many concurrent appends, one write + one fdatasync per batch.

Every HTTP request (or bulk batch) awaits :meth:`GroupCommitWriter.append_many`; requests
that arrive while a sync is in progress are gathered into the next batch. One flush runs at
a time (order = chain order) in a worker thread, so the event loop keeps accepting events
during the sync. A caller's await returns only once its records are on disk; if the write
fails, every waiter of that batch gets :class:`~.log.AuditWriteFailed` (nothing is acked).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from .log import AuditLog, AuditWriteFailed

log = logging.getLogger(__name__)


class GroupCommitWriter:
    def __init__(self, audit_log: AuditLog) -> None:
        self.log = audit_log
        self._pending: list[bytes] = []
        self._leaves: list[bytes | None] = []
        self._waiters: list[tuple[asyncio.Future[int], int, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-log")
        self._closing = False
        self._closed = False
        self.batches = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-group-commit")

    async def append(self, body: bytes) -> int:
        """Append one record body; returns its sequence number once it is durable."""
        return await self.append_many([body])

    async def append_many(self, bodies: list[bytes], leaves: list[bytes] | None = None) -> int:
        """Append bodies as consecutive records; returns the first sequence number once durable.

        ``leaves`` are the bodies' Merkle leaves when already computed (bulk workers).
        """
        if self._closing:
            raise AuditWriteFailed("the audit writer is shutting down")
        if not bodies:
            return self.log.size + 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, len(self._pending), len(bodies)))
        self._pending.extend(bodies)
        if leaves is not None:
            self._leaves.extend(leaves)
        else:
            self._leaves.extend([None] * len(bodies))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                if self._closing:
                    return
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.log.checkpoint_interval)
                except TimeoutError:
                    try:
                        await loop.run_in_executor(self._executor, self.log.maybe_checkpoint)
                    except AuditWriteFailed:
                        log.exception("periodic checkpoint failed")
                    continue
            batch, leaves, waiters = self._pending, self._leaves, self._waiters
            self._pending, self._leaves, self._waiters = [], [], []
            try:
                first = await loop.run_in_executor(self._executor, self.log.append_many, batch, leaves)
            except BaseException as exc:  # every waiter must learn the batch failed
                err = exc if isinstance(exc, AuditWriteFailed) else AuditWriteFailed(str(exc))
                for fut, _, _ in waiters:
                    if not fut.done():
                        fut.set_exception(err)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            for fut, offset, _ in waiters:
                if not fut.done():
                    fut.set_result(first + offset)

    async def close(self) -> None:
        """Flush what is pending, sign a final checkpoint and close the log (idempotent)."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._executor, self.log.close)
        self._executor.shutdown(wait=True)
        self._closed = True
