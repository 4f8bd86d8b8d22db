"""Prometheus metrics for the audit service, on a registry of its own (served on /metrics).

Events by kind, rule, priority and whether they were attributed to a hub user; decisions
and denials; intake latency. No label carries a user name (its cardinality would grow with
every user): per-user views come from the audit log itself (``jovial-guard audit query``).
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
                              ["kind", "rule", "priority", "attributed"], registry=r)
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

    def event(self, kind: str, rule: str, priority: str, user: str | None, count: int = 1) -> None:
        """Count ``count`` events; ``user`` only decides the ``attributed`` label."""
        attributed = "false" if user in (None, "", "unattributed") else "true"
        key = (kind, rule, priority, attributed)
        child = self._event_children.get(key)
        if child is None:
            child = self._event_children[key] = self.events.labels(*key)
        child.inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
