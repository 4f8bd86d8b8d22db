"""Prometheus gauges of the last cluster audit: the current state, not event counts.

Violations are labelled by namespace, rule and mode; never by user (per-user views are in
the PolicyReports and the JSON logs).
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client import Counter as PromCounter

from .report import Finding


class ClusterAuditMetrics:
    """Gauges replaced wholesale after each run, so fixed violations disappear."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.violations = Gauge(
            "jovial_guard_cluster_audit_violations",
            "Violations found by the last cluster audit, by namespace, rule and mode (enforce, warn, audit, error).",
            ["namespace", "rule", "mode"],
            registry=self.registry,
        )
        self.pods = Gauge("jovial_guard_cluster_audit_pods", "Pods decided by the last cluster audit, by namespace.",
                          ["namespace"], registry=self.registry)
        self.last_run = Gauge("jovial_guard_cluster_audit_last_run_timestamp_seconds",
                              "Unix time the last cluster audit finished.", registry=self.registry)
        self.runs = PromCounter("jovial_guard_cluster_audit_runs_total", "Cluster audit runs by outcome (ok, error).",
                                ["outcome"], registry=self.registry)
        self.revision = Gauge("jovial_guard_policy_revision_info", "1 for the policy revision the last audit decided with.",
                              ["revision"], registry=self.registry)

    def update(self, findings: list[Finding], pods_by_namespace: dict[str, int], *, revision: str, finished: float) -> None:
        self.violations.clear()
        for (ns, rule, mode), n in Counter((f.namespace, f.rule, f.mode) for f in findings).items():
            self.violations.labels(ns, rule, mode).set(n)
        self.pods.clear()
        for ns, n in pods_by_namespace.items():
            self.pods.labels(ns).set(n)
        self.revision.clear()
        self.revision.labels(revision).set(1)
        self.last_run.set(finished)
        self.runs.labels("ok").inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
