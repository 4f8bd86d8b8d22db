"""Record every policy decision: a PolicyEngine listener for the spawn hook and the webhook.

Usage (in-process, the audit service in the same event loop)::

    engine = PolicyEngine(conn, listeners=[AuditDecisionListener(LocalSink(service))])

or from another process (the hub, the admission webhook) to ``jovial-guard audit serve``::

    engine = PolicyEngine(conn, listeners=[AuditDecisionListener(HttpSink("http://127.0.0.1:8765"))])

A listener cannot change a decision (PolicyEngine guarantees that); if the audit service
cannot be reached the failure is logged and counted in ``failures``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import aiohttp

from ..decision import Decision
from ..errors import Unavailable
from ..workload import Workload
from .events import decision_event

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    async def submit(self, endpoint: str, doc: dict[str, Any]) -> None: ...


def decision_document(workload: Workload, decision: Decision, seconds: float) -> dict[str, Any]:
    """The wire form of one decision (pure; what POST /decision accepts)."""
    reasons = [{"rule": r.rule, "message": r.message} for r in decision.reasons]
    server = workload.extra.get("server_name", workload.extra.get("server"))
    return {
        "allowed": decision.allowed,
        "reasons": reasons,
        "message": decision.message() if not decision.allowed else "allowed",
        "user": workload.user.name if workload.user else None,
        "server": server if isinstance(server, str) else None,
        "origin": workload.origin,
        "workload": {"kind": workload.kind, "name": workload.name, "namespace": workload.namespace,
                     "operation": workload.operation, "request_user": workload.request_user},
        "profile": workload.profile,
        "policy_revision": decision.policy_revision,
        "decision_id": decision.decision_id,
        "seconds": round(seconds, 6),
        "digest": workload.digest(),
        "dry_run": workload.dry_run,
    }


class LocalSink:
    """Write straight into an AuditService running in this process."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def submit(self, endpoint: str, doc: dict[str, Any]) -> None:
        if endpoint != "decision":
            raise ValueError(f"LocalSink accepts only decisions, not {endpoint!r}")
        await self.service.record(decision_event(doc))


class HttpSink:
    """POST to a running ``jovial-guard audit serve`` (keep-alive session, lazily opened)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def submit(self, endpoint: str, doc: dict[str, Any]) -> None:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
        async with self._session.post(f"{self.url}/{endpoint}", json=doc) as resp:
            if resp.status != 200:
                raise Unavailable(f"audit intake answered {resp.status}: {(await resp.text())[:200]}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class AuditDecisionListener:
    """``(workload, decision, seconds)`` listener that records the decision durably."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink
        self.failures = 0

    async def __call__(self, workload: Workload, decision: Decision, seconds: float) -> None:
        try:
            await self.sink.submit("decision", decision_document(workload, decision, seconds))
        except Exception:  # auditing must not change or break a decision
            self.failures += 1
            log.exception("could not record policy decision %s in the audit log", decision.decision_id)
