"""Prometheus metrics for the audit service, on a registry of its own (served on /metrics).

Labels follow the issue: events by kind, rule, priority and user; decisions and denials;
intake latency. ``user`` is the attributed hub user or ``unattributed``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "AuditMetrics"]


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("jovial_guard_audit_events_total", "Audit events recorded.",
                              ["kind", "rule", "priority", "user"], registry=r)
        self.decisions = Counter("jovial_guard_audit_decisions_total", "Policy decisions recorded.",
                                 ["allowed", "origin"], registry=r)
        self.denials = Counter("jovial_guard_audit_denials_total", "Policy denials by first reason rule.",
                               ["rule"], registry=r)
        self.quarantined = Counter("jovial_guard_audit_quarantined_total",
                                   "Malformed events kept in the quarantine file.", ["endpoint"], registry=r)
        self.responses = Counter("jovial_guard_audit_responses_total", "Response actions by outcome.",
                                 ["action", "outcome"], registry=r)
        self.intake_seconds = Histogram(
            "jovial_guard_audit_intake_seconds", "Time from request to durable acknowledgement.",
            ["endpoint"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.records = Gauge("jovial_guard_audit_log_records", "Records in the audit log.", registry=r)
        self._event_children: dict[tuple[str, str, str, str], Counter] = {}

    def event(self, kind: str, rule: str, priority: str, user: str | None) -> None:
        key = (kind, rule, priority, user or "unattributed")
        child = self._event_children.get(key)
        if child is None:
            child = self._event_children[key] = self.events.labels(*key)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
