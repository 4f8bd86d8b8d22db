"""Prometheus metrics of the webhook, on a registry of its own (one per server instance).

With several worker processes each worker counts its own requests; set
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) before start to
aggregate them, which :func:`jovial_guard.admission.server.serve` does for ``--workers > 1``.
"""

from __future__ import annotations

import os

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


class WebhookMetrics:
    """Requests, latency, cache and policy-revision gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "jovial_guard_admission_requests_total",
            "AdmissionReviews answered, by endpoint and outcome (allowed, denied, malformed, error).",
            ["endpoint", "outcome"],
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
        self.ready = Gauge(
            "jovial_guard_admission_ready",
            "1 when OPA answers with the expected policy revision.",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def render(self) -> bytes:
        """The exposition text; aggregated across workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
