"""Identity that cannot be borrowed, UPDATE like Pod Security, accelerators and images,
through the webhook handler with the real OPA and the repository's policies.

Pods come from KubeSpawner's own ``make_pod`` (what a z2jh hub sends); requests carry the
userInfo the API server would put there.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa

from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

HUB = "system:serviceaccount:jhub:hub"
ADMIN_GROUPS = ["system:masters", "system:authenticated"]


def review(obj: dict[str, Any], *, username: str = HUB, groups: list[str] | None = None, **kwargs: Any) -> bytes:
    doc = admission_review(obj, username=username, **kwargs)
    if groups is not None:
        doc["request"]["userInfo"]["groups"] = groups
    return json.dumps(doc).encode()


def update_review(new: dict[str, Any], old: dict[str, Any], *, username: str, groups: list[str] | None = None, subresource: str | None = None) -> bytes:
    doc = admission_review(new, username=username, operation="UPDATE", old=old)
    if groups is not None:
        doc["request"]["userInfo"]["groups"] = groups
    if subresource:
        doc["request"]["subResource"] = subresource
    return json.dumps(doc).encode()


def patch_of(result: Any) -> list[dict[str, Any]]:
    raw = result.body["response"].get("patch")
    return json.loads(base64.b64decode(raw)) if raw else []


def message(result: Any) -> str:
    return str(result.body["response"].get("status", {}).get("message", ""))


@pytest.fixture(scope="module")
def handler(engine: PolicyEngine) -> AdmissionHandler:
    return AdmissionHandler(engine)


async def notebook(username: str, **kwargs: Any) -> dict[str, Any]:
    return as_api_server_sends(await kubespawner_pod(username=username, **kwargs))


async def stored(handler: AdmissionHandler, pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as it would be stored: created by the hub, with the webhook's patch applied."""
    result = await handler.handle(review(pod), mode="mutate")
    assert result.body["response"]["allowed"] is True, message(result)
    return jsonpatch.apply_patch(pod, patch_of(result))


# --- identity -------------------------------------------------------------------------


async def test_hub_service_account_cannot_be_borrowed(handler: AdmissionHandler) -> None:
    pod = await notebook("mallory")
    for key in ("annotations",):
        pod["metadata"][key] = {}
    pod["metadata"]["labels"] = {"app": "tools"}
    pod["metadata"]["name"] = "tools"
    pod["spec"]["serviceAccountName"] = "hub"
    denied = await handler.handle(review(pod, username="system:serviceaccount:jhub:default"), mode="mutate")
    assert denied.body["response"]["allowed"] is False
    assert "[identity/hub-service-account]" in message(denied)
    # The hub itself, and the ReplicaSet controller copying z2jh's hub Deployment, may.
    for creator in (HUB, "system:serviceaccount:kube-system:replicaset-controller"):
        allowed = await handler.handle(review(pod, username=creator), mode="mutate")
        assert allowed.body["response"]["allowed"] is True, message(allowed)


@pytest.mark.parametrize("labels, rule", [
    ({"component": "hub", "app": "jupyterhub"}, "identity/hub-labels"),
    ({"component": "proxy"}, "identity/hub-labels"),
    ({"egress.jovial-guard.io/astro": "allow"}, "identity/egress-labels"),
])
async def test_hub_and_egress_labels_cannot_be_borrowed(handler: AdmissionHandler, labels: dict[str, str], rule: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sneaky", "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}
    result = await handler.handle(review(pod, username="system:serviceaccount:jhub:default"), mode="mutate")
    assert result.body["response"]["allowed"] is False
    assert f"[{rule}]" in message(result)


async def test_egress_labels_are_rendered_from_the_hubs_groups(handler: AdmissionHandler) -> None:
    pod = await notebook("alice", groups=("astro",))
    # A label for a group alice is not in: removed, whoever put it there.
    pod["metadata"]["labels"]["egress.jovial-guard.io/staff"] = "allow"
    result = await handler.handle(review(pod), mode="mutate")
    assert result.body["response"]["allowed"] is True, message(result)
    labels = jsonpatch.apply_patch(pod, patch_of(result))["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith("egress.jovial-guard.io/")} == {"egress.jovial-guard.io/astro": "allow"}
    # /validate refuses the pod whose egress labels differ from the rendered ones.
    validated = await handler.handle(review(pod), mode="validate")
    assert validated.body["response"]["allowed"] is False and "[not-hardened]" in message(validated)


async def test_groups_travel_as_a_json_list(handler: AdmissionHandler) -> None:
    pod = await notebook("zoe", groups=("gpu-users", "large-memory"), profile="large-memory")
    assert json.loads(pod["metadata"]["annotations"]["jovial-guard.io/groups"]) == ["gpu-users", "large-memory"]
    result = await handler.handle(review(pod), mode="mutate")
    assert result.body["response"]["allowed"] is True, message(result)
    assert result.body["response"]["auditAnnotations"]["scope"] == "notebook"


# --- UPDATE ---------------------------------------------------------------------------


async def large_notebook(handler: AdmissionHandler) -> dict[str, Any]:
    return await stored(handler, await notebook("gina", groups=("large-memory",), profile="large-memory"))


async def test_admin_label_on_a_large_notebook_is_not_re_decided(handler: AdmissionHandler) -> None:
    old = await large_notebook(handler)
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["team"] = "ops"
    result = await handler.handle(update_review(new, old, username="admin-ann"), mode="mutate")
    assert result.body["response"]["allowed"] is True, message(result)
    assert "patch" not in result.body["response"]
    # Finalizers only: admitted without asking the policy at all.
    fin = copy.deepcopy(old)
    fin["metadata"]["finalizers"] = ["example.com/keep"]
    quick = await handler.handle(update_review(fin, old, username="admin-ann"), mode="validate")
    assert quick.body["response"]["allowed"] is True
    assert quick.body["response"]["auditAnnotations"]["update"] == "metadata-only"


async def test_metadata_update_cannot_introduce_identity(handler: AdmissionHandler) -> None:
    old = await large_notebook(handler)
    for change in ({"labels": {"egress.jovial-guard.io/astro": "allow"}}, {"labels": {"component": "hub"}},
                   {"annotations": {"jovial-guard.io/groups": '["gpu-users"]'}}):
        new = copy.deepcopy(old)
        for key, values in change.items():
            new["metadata"].setdefault(key, {}).update(values)
        result = await handler.handle(update_review(new, old, username="system:serviceaccount:jhub:default"), mode="mutate")
        assert result.body["response"]["allowed"] is False, change
        assert "[identity/" in message(result)


async def test_debug_container_keeps_the_pod_owner(handler: AdmissionHandler) -> None:
    old = await large_notebook(handler)
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]
    result = await handler.handle(update_review(new, old, username="admin-ann", subresource="ephemeralcontainers"), mode="mutate")
    assert result.body["response"]["allowed"] is True, message(result)
    ops = patch_of(result)
    assert ops and all(op["path"].startswith("/spec/ephemeralContainers/") for op in ops)
    # The debugger itself is decided: privileged is refused whoever asks.
    new["spec"]["ephemeralContainers"][0]["securityContext"] = {"privileged": True}
    denied = await handler.handle(update_review(new, old, username="admin-ann", subresource="ephemeralcontainers"), mode="mutate")
    assert "[pod-security/privileged]" in message(denied)


async def test_resize_is_decided_against_the_owners_limits(handler: AdmissionHandler) -> None:
    old = await large_notebook(handler)  # large-memory: at most 16Gi
    within = copy.deepcopy(old)
    within["spec"]["containers"][0]["resources"]["limits"]["memory"] = "12Gi"
    ok = await handler.handle(update_review(within, old, username="admin-ann", subresource="resize"), mode="validate")
    assert ok.body["response"]["allowed"] is True, message(ok)
    beyond = copy.deepcopy(old)
    beyond["spec"]["containers"][0]["resources"]["limits"]["memory"] = "64Gi"
    denied = await handler.handle(update_review(beyond, old, username=HUB, subresource="resize"), mode="validate")
    assert "[resources/memory]" in message(denied)


# --- accelerators and images ----------------------------------------------------------


@pytest.mark.parametrize("resource", ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "amd.com/gpu", "gpu.intel.com/i915"])
async def test_every_accelerator_is_counted(handler: AdmissionHandler, resource: str) -> None:
    pod = await notebook("hal", groups=("astro",))
    pod["spec"]["containers"][0]["resources"]["limits"][resource] = "1"
    result = await handler.handle(review(pod), mode="mutate")
    assert "[resources/gpu]" in message(result)
    gpu_user = await notebook("ida", groups=("gpu-users",), profile="gpu")
    gpu_user["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2", "memory": "8Gi", resource: "1"}}
    assert (await handler.handle(review(gpu_user), mode="mutate")).body["response"]["allowed"] is True


async def test_dra_claims_are_counted(handler: AdmissionHandler) -> None:
    pod = await notebook("jo")
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"}]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    assert "[resources/dra]" in message(await handler.handle(review(pod), mode="mutate"))


@pytest.mark.parametrize("image, allowed", [
    ("registry.k8s.io/pause:3.10.2", True),
    ("registry.k8s.io/pause-but-not-really/x:1", False),
    ("quay.io/jupyterhub/k8s-singleuser-sample:4.2.0", True),
    ("quay.io/jupyterhubevil/k8s-singleuser-sample:4.2.0", False),
])
async def test_image_allowlist_at_repository_boundaries(handler: AdmissionHandler, image: str, allowed: bool) -> None:
    pod = await notebook("kim", image=image)
    result = await handler.handle(review(pod), mode="mutate")
    assert result.body["response"]["allowed"] is allowed, message(result)


# --- exemptions -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exempting_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedOpa]:
    policies = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policies, ignore=shutil.ignore_patterns("*_test.rego"))
    data = json.loads((policies / "data.json").read_text())
    data["settings"]["exemptions"] = [{
        "id": "metadata-blocker",
        "reason": "z2jh's iptables init container blocks cloud metadata",
        "rules": ["pod-security/privileged", "pod-security/capabilities", "pod-security/run-as-root"],
        "namespaces": ["jhub"],
        "images": ["quay.io/jupyterhub/k8s-network-tools", "quay.io/jupyter/scipy-notebook"],
        "request_users": [HUB],
        "expires": "2099-01-01T00:00:00Z",
    }]
    (policies / "data.json").write_text(json.dumps(data))
    with ManagedOpa(Path(policies)) as server:
        yield server


async def test_exemption_is_visible_in_the_decision_and_audit(exempting_opa: ManagedOpa) -> None:
    pod = await notebook("lea")
    pod["spec"]["initContainers"] = [{
        "name": "block-cloud-metadata", "image": "quay.io/jupyterhub/k8s-network-tools:4.2.0",
        "command": ["iptables", "-A", "OUTPUT", "-d", "169.254.169.254", "-j", "DROP"],
        "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}},
    }]
    seen: list[Any] = []
    async with OpaConnection(OpaEndpoint(exempting_opa.url), timeout=5.0) as conn:
        handler = AdmissionHandler(PolicyEngine(conn, deadline=5.0), decision_log=lambda w, d, m, s: seen.append(d))
        result = await handler.handle(review(pod), mode="mutate")
        assert result.body["response"]["allowed"] is True, message(result)
        audit = result.body["response"]["auditAnnotations"]
        assert "metadata-blocker (pod-security/privileged)" in audit["exemptions"]
        assert {e.rule for e in seen[0].exemptions} == {"pod-security/privileged", "pod-security/capabilities", "pod-security/run-as-root"}
        # Outside its scope (another requester) the same pod is denied.
        denied = await handler.handle(review(pod, username="system:serviceaccount:jhub:default"), mode="mutate")
        assert denied.body["response"]["allowed"] is False
