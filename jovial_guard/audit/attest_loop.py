"""The audit service's attestation loop (embedded mode).

Every ``interval`` seconds, and right after any server starts (an engine ``container start``
or a hub ``server start`` event wakes it), each running server in the spawn registry is
read from ``/proc`` (:mod:`jovial_guard.attest.observe`) and compared with the hardening
record its spawn registered (:mod:`jovial_guard.attest.compare`). Each check is an audit
event through :meth:`AuditService.record`, attributed to the hub user; a new drift is the
``attestation drift`` rule, which the response rules act on (stop the server, cut its
network). Reading happens in a worker thread: the event loop keeps taking events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attest import observe as obs
from ..attest.compare import Drift, compare
from ..attest.confirm import confirmed, looking_again
from ..attest.expect import RecordUnusable, from_hardening
from ..attest.report import attestation_event, unattestable_event
from ..attest.status import ServerAttestation, write_status
from ..runtime import procfs
from .registry import Owner, SpawnRegistry
from .service import AuditService

log = logging.getLogger(__name__)
SOURCE = "attestation"


@dataclass(frozen=True)
class Located:
    pid: int
    container_id: str


#: Finds a registered server's container: its first process and full id (None: not running).
Locator = Callable[[Owner], Located | None]


def docker_locator(client: Any) -> Locator:
    """A locator asking the engine's Docker API (``inspect``: ``State.Pid``)."""
    import docker.errors

    def locate(owner: Owner) -> Located | None:
        ref = owner.container_id or owner.container_name
        if not ref:
            return None
        try:
            info = client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return None
        pid = int((info.get("State") or {}).get("Pid") or 0)
        return Located(pid=pid, container_id=str(info.get("Id") or ref)) if pid > 0 else None

    return locate


def read_ruleset(name: str) -> str:
    from ..hardening.egress_digest import live_listing

    return live_listing(name)


class AttestationLoop:
    """Attests every running server; ``observe`` wakes it on server starts (an observer)."""

    def __init__(self, service: AuditService, registry: SpawnRegistry, *, locate: Locator,
                 interval: float = 5.0, status_dir: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if interval <= 0:
            raise ValueError(f"attestation interval must be positive, not {interval}")
        self.service = service
        self.registry = registry
        self.locate = locate
        self.interval = interval
        self.status_dir = status_dir
        self.clock = clock
        self.previous: dict[tuple[str, str], list[Drift]] = {}
        #: Engine answers kept while the same process runs (pid + start time): one inspect
        #: per container start instead of one per pass.
        self._located: dict[str, tuple[Located, int]] = {}
        self.passes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def observe(self, event: dict[str, Any], seq: int) -> None:
        if event.get("rule") in ("container start", "server start"):
            self._wake.set()

    def start(self) -> AttestationLoop:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.attest_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad pass
                log.exception("attestation pass failed")
            # Passes start every ``interval`` seconds (not ``interval`` after the last one
            # ended), so a drift waits at most one period plus one pass.
            try:
                await asyncio.wait_for(self._wake.wait(),
                                       timeout=max(0.0, self.interval - (time.monotonic() - began)))
            except TimeoutError:
                pass
            self._wake.clear()

    async def attest_all(self) -> list[dict[str, Any]]:
        """One pass over every running server; returns the events it recorded."""
        checks = await asyncio.to_thread(self._check_all)
        events = [event for event, _ in checks]
        if events:
            await self.service.record_many(events)
        self.passes += 1
        if self.status_dir is not None:
            now = self.clock()
            entries = [entry for _, entry in checks if entry is not None]
            await asyncio.to_thread(write_status, self.status_dir, entries, now=now)
        return events

    def _check_all(self) -> list[tuple[dict[str, Any], ServerAttestation | None]]:
        owners = self.registry.running_servers()
        current = {(o.user, o.server) for o in owners}
        for gone in set(self.previous) - current:
            del self.previous[gone]
        refs = {o.container_id or o.container_name or "" for o in owners}
        for ref in set(self._located) - refs:
            del self._located[ref]
        if not owners:
            return []
        index = procfs.namespace_index()
        results = []
        for owner in owners:
            result = self._check(owner, index)
            if result is not None:
                results.append(result)
        return results

    def _locate(self, owner: Owner) -> Located | None:
        ref = owner.container_id or owner.container_name or ""
        cached = self._located.get(ref)
        if cached is not None and procfs.start_time(cached[0].pid) == cached[1]:
            return cached[0]
        where = self.locate(owner)
        started = procfs.start_time(where.pid) if where is not None else None
        if where is not None and started is not None and ref:
            self._located[ref] = (where, started)
        else:
            self._located.pop(ref, None)
        return where

    def _check(self, owner: Owner, index: dict[str, list[int]]) -> tuple[dict[str, Any], ServerAttestation | None] | None:
        key = (owner.user, owner.server)
        where = self._locate(owner)
        if where is None:
            return None  # not started yet, or already gone: nothing runs to attest
        record = owner.record or {}
        try:
            expected = from_hardening(record["hardening"])
        except (KeyError, TypeError, RecordUnusable) as exc:
            reason = f"no usable hardening record: {exc}"
            entry = ServerAttestation(owner.user, owner.server, self.clock(), "unattested",
                                      ({"kind": "record", "detail": reason},))
            return unattestable_event(user=owner.user, server=owner.server, reason=reason, source=SOURCE), entry
        started = time.perf_counter()

        def observe(index: dict[str, list[int]]) -> obs.Observation:
            return obs.observe(where.pid, netns=expected.netns,
                               read_ruleset=read_ruleset if expected.ruleset_digest else None, index=index)

        try:
            seen = observe(index)
        except obs.ContainerGone:
            return None
        drifts = confirmed(compare(expected, seen),
                           looking_again(expected, lambda: observe(procfs.namespace_index())))
        previous = self.previous.get(key)
        self.previous[key] = drifts
        event = attestation_event(
            user=owner.user, server=owner.server, drifts=drifts, previous=previous, source=SOURCE,
            container_id=where.container_id, network_cut=seen.network_cut,
            fields={"pid": where.pid, "processes": len(seen.processes),
                    "decision_id": record.get("decision_id"), "netns": expected.netns,
                    "ruleset_digest": seen.ruleset_digest,
                    "seconds": round(time.perf_counter() - started, 6)})
        entry = ServerAttestation(owner.user, owner.server, self.clock(), event["fields"]["status"],
                                  tuple(d.to_json() for d in drifts))
        return event, entry
