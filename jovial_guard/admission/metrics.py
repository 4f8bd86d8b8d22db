"""Prometheus metrics of the webhook, on a registry of its own (one per server instance).

Names follow Prometheus' rules (``_total`` counters, ``_seconds`` durations, ``_info``
for an info gauge). Labels are bounded: endpoint, operation, kind, namespace, mode,
outcome and dry_run on requests; rule ids come from the policy (a fixed set). No label
carries a user: per-user views come from the JSON logs and the decision log.

With several worker processes each worker counts its own requests; set
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) before start to
aggregate them, which :func:`jovial_guard.admission.server.serve` does for ``--workers > 1``.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Buckets around the 10 ms target: admission is on every pod creation's critical path.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_LABELS = ["endpoint", "operation", "kind", "namespace", "mode", "outcome", "dry_run"]


class WebhookMetrics:
    """Requests, latency, cache, violations and policy-revision gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "jovial_guard_admission_requests_total",
            "AdmissionReviews answered, by endpoint, operation, kind, namespace, the strictest "
            "enforcement mode that acted (enforce, warn, audit, none) and outcome (allowed, denied, malformed, error).",
            REQUEST_LABELS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "jovial_guard_admission_duration_seconds",
            "Time from request body read to response built.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "jovial_guard_admission_cache_total",
            "Decision cache lookups by result (hit, miss).",
            ["result"],
            registry=self.registry,
        )
        self.denials = Counter(
            "jovial_guard_admission_denials_total",
            "Denials by the first rule id.",
            ["rule"],
            registry=self.registry,
        )
        self.violations = Counter(
            "jovial_guard_admission_violations_total",
            "Rule violations in decided requests, by rule id and the mode it acted in (enforce, warn, audit).",
            ["rule", "mode"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "jovial_guard_admission_ready",
            "1 when OPA answers with the expected policy revision.",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.revision = Gauge(
            "jovial_guard_policy_revision_info",
            "1 for the policy revision this webhook's OPA serves (0 for revisions it served before).",
            ["revision"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self._revision: str | None = None

    def observe_request(self, endpoint: str, result: Any) -> None:
        """Count one answered review (a HandlerResult) under its bounded labels."""
        self.requests.labels(
            endpoint,
            result.operation or "unknown",
            result.kind or "unknown",
            result.namespace or "",
            result.mode,
            result.outcome,
            "true" if result.dry_run else "false",
        ).inc()
        for mode, rule in result.violations:
            self.violations.labels(rule, mode).inc()

    def set_revision(self, revision: str | None) -> None:
        """Point the info gauge at ``revision``."""
        if revision == self._revision:
            return
        if self._revision is not None:
            self.revision.labels(self._revision).set(0)
        if revision is not None:
            self.revision.labels(revision).set(1)
        self._revision = revision

    def render(self) -> bytes:
        """The exposition text; aggregated across workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
