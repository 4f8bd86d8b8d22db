"""Enforcement modes through the webhook's handler, decided by the real OPA.

The namespace's labels come from a reader standing in for the API server (the real read
is exercised in the cluster tests); the modes themselves are decided by the Rego.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from jovial_guard.admission.cache import DecisionCache
from jovial_guard.admission.handler import NAMESPACE_UNAVAILABLE, AdmissionHandler
from jovial_guard.admission.namespaces import NamespaceLabels, mode_labels
from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa

from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

LATEST = "quay.io/jupyter/base-notebook:latest"


async def latest_pod(username: str) -> dict[str, Any]:
    pod = as_api_server_sends(await kubespawner_pod(username=username))
    pod["spec"]["containers"][0]["image"] = LATEST
    return pod


class Reader:
    """Namespace labels by name, counting reads; raises for namespaces it does not know."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.reads = 0

    async def __call__(self, namespace: str) -> dict[str, str]:
        self.reads += 1
        return self.labels[namespace]


def handler_with(engine: PolicyEngine, labels: dict[str, dict[str, str]]) -> tuple[AdmissionHandler, Reader]:
    reader = Reader(labels)
    return AdmissionHandler(engine, cache=DecisionCache(), namespaces=NamespaceLabels(reader)), reader


async def ask(handler: AdmissionHandler, pod: dict[str, Any], namespace: str, mode: str = "mutate") -> Any:
    body = json.dumps(admission_review(pod, namespace=namespace)).encode()
    return await handler.handle(body, mode=mode)  # type: ignore[arg-type]


async def test_default_mode_enforces(engine: PolicyEngine) -> None:
    handler, _ = handler_with(engine, {"jhub": {"team": "x"}})
    result = await ask(handler, await latest_pod("m1"), "jhub")
    response = result.body["response"]
    assert response["allowed"] is False and "[images/latest]" in response["status"]["message"]
    assert result.mode == "enforce" and response["auditAnnotations"]["mode"] == "enforce"
    assert (result.operation, result.kind, result.namespace, result.dry_run) == ("CREATE", "Pod", "jhub", False)


@pytest.mark.parametrize("label", ["jovial-guard.io/mode", "mode.jovial-guard.io/images", "mode.jovial-guard.io/images.latest"])
async def test_warn_label_admits_with_a_warning_and_still_hardens(engine: PolicyEngine, label: str) -> None:
    handler, _ = handler_with(engine, {"jhub": {label: "warn"}})
    result = await ask(handler, await latest_pod("m2"), "jhub")
    response = result.body["response"]
    assert response["allowed"] is True, response
    assert any(w.startswith("[images/latest] ") for w in response["warnings"])
    assert response["patchType"] == "JSONPatch"  # warn admits, the hardening still applies
    assert result.mode == "warn"
    audit = response["auditAnnotations"]
    assert audit["mode"] == "warn" and audit["warned"].startswith("[images/latest] ")


async def test_audit_label_admits_and_records_without_warning(engine: PolicyEngine) -> None:
    handler, _ = handler_with(engine, {"jhub": {"jovial-guard.io/mode": "audit"}})
    result = await ask(handler, await latest_pod("m3"), "jhub")
    response = result.body["response"]
    assert response["allowed"] is True
    assert not any("[images/latest]" in w for w in response.get("warnings", []))
    assert result.mode == "audit" and response["auditAnnotations"]["audited"].startswith("[images/latest] ")


async def test_labels_change_the_decision_per_namespace_and_are_cached(engine: PolicyEngine) -> None:
    handler, reader = handler_with(engine, {"jhub": {}, "staging": {"jovial-guard.io/mode": "warn"}})
    pod = await latest_pod("m4")
    assert (await ask(handler, pod, "jhub")).body["response"]["allowed"] is False
    assert (await ask(handler, pod, "staging")).body["response"]["allowed"] is True
    assert (await ask(handler, pod, "staging")).body["response"]["allowed"] is True
    assert reader.reads == 2  # one read per namespace within the TTL


async def test_unreadable_namespace_denies(engine: PolicyEngine) -> None:
    handler, _ = handler_with(engine, {})
    result = await ask(handler, as_api_server_sends(await kubespawner_pod(username="m5")), "nowhere")
    response = result.body["response"]
    assert response["allowed"] is False and result.outcome == "error"
    assert f"[{NAMESPACE_UNAVAILABLE}]" in response["status"]["message"]
    assert response["status"]["code"] == 503


async def test_engine_failure_is_never_downgraded_by_a_mode() -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=1.0) as conn:
            handler, _ = handler_with(PolicyEngine(conn, deadline=1.0), {"jhub": {"jovial-guard.io/mode": "off"}})
            opa.kill()
            result = await ask(handler, await latest_pod("m6"), "jhub")
    response = result.body["response"]
    assert response["allowed"] is False and f"[{ENGINE_UNAVAILABLE}]" in response["status"]["message"]
    assert result.mode == "enforce"


def test_only_mode_labels_are_kept() -> None:
    labels = {"jovial-guard.io/mode": "warn", "mode.jovial-guard.io/images": "audit", "team": "a", "kubernetes.io/metadata.name": "x"}
    assert mode_labels(labels) == {"jovial-guard.io/mode": "warn", "mode.jovial-guard.io/images": "audit"}
    assert mode_labels(None) == {}


async def test_ttl_expiry_reads_again() -> None:
    now = [0.0]
    reader = Reader({"a": {"jovial-guard.io/mode": "warn"}})
    cache = NamespaceLabels(reader, ttl=5.0, clock=lambda: now[0])
    assert await cache.labels("a") == {"jovial-guard.io/mode": "warn"}
    now[0] = 4.0
    await cache.labels("a")
    assert reader.reads == 1
    now[0] = 6.0
    reader.labels["a"] = {}
    assert await cache.labels("a") == {}
    assert reader.reads == 2
