"""UPDATE like Pod Security, through a real kube-apiserver with our webhooks.

An operator (not a cluster admin, not in any hub group) works on a large-memory notebook
the hub created: labels it, adds and removes a finalizer, attaches a debug container and
resizes it in place. Metadata-only updates are not re-decided; identity-bearing labels
cannot be introduced; the debug container is hardened with the pod's owner kept; a resize
is capped by the owner's groups (``pods/resize`` is routed to the webhooks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.admission.kubespawner_pods import kubespawner_pod

from .test_apiserver_e2e import (  # noqa: F401 - module-scoped fixtures: one control plane here
    HUB_NS,
    api,
    certs,
    cluster,
    create_pod,
    denial_of,
    e2e_opa,
    webhook,
)

pytestmark = pytest.mark.integration

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

OPERATOR = "ops-ann"
HUB_SA = f"system:serviceaccount:{HUB_NS}:hub"


def as_user(cluster_: Any, username: str) -> client.ApiClient:
    impersonating = config.new_client_from_config(str(cluster_.kubeconfig))
    impersonating.set_default_header("Impersonate-User", username)
    return impersonating


@pytest.fixture(scope="module")
def notebook(api: client.ApiClient, cluster: Any) -> Iterator[tuple[str, client.CoreV1Api]]:  # noqa: F811
    rbac = client.RbacAuthorizationV1Api(api)
    rules = [{"apiGroups": [""], "resources": ["pods", "pods/ephemeralcontainers", "pods/resize"],
              "verbs": ["create", "get", "patch", "update"]}]
    for name, user in (("hub-e2e", HUB_SA), ("ops-e2e", OPERATOR)):
        rbac.create_namespaced_role(HUB_NS, {"metadata": {"name": name}, "rules": rules})
        rbac.create_namespaced_role_binding(HUB_NS, {
            "metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    pod = asyncio.run(kubespawner_pod(username="gwen", groups=("large-memory",), profile="large-memory", namespace=HUB_NS))
    as_hub = as_user(cluster, HUB_SA)
    try:
        name = create_pod(as_hub, pod)["metadata"]["name"]
    finally:
        as_hub.close()
    operator = as_user(cluster, OPERATOR)
    yield name, client.CoreV1Api(operator)
    operator.close()


def test_operator_labels_and_finalizers_are_not_re_decided(notebook: tuple[str, client.CoreV1Api]) -> None:
    name, core = notebook
    labelled = core.patch_namespaced_pod(name, HUB_NS, {"metadata": {"labels": {"team": "ops"}}})
    assert labelled.metadata.labels["team"] == "ops"
    core.patch_namespaced_pod(name, HUB_NS, {"metadata": {"finalizers": ["example.com/keep"]}})
    core.patch_namespaced_pod(name, HUB_NS, {"metadata": {"finalizers": None}})


@pytest.mark.parametrize("label", ["egress.jovial-guard.io/astro", "component", "hub.jupyter.org/network-access-proxy-api"])
def test_operator_cannot_introduce_identity_labels(notebook: tuple[str, client.CoreV1Api], label: str) -> None:
    name, core = notebook
    value = "hub" if label == "component" else "true"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod(name, HUB_NS, {"metadata": {"labels": {label: value}}})
    assert "[identity/" in denial_of(err.value)


def test_operator_debug_container_keeps_the_owner(notebook: tuple[str, client.CoreV1Api]) -> None:
    name, core = notebook
    pod = client.ApiClient().sanitize_for_serialization(core.read_namespaced_pod(name, HUB_NS))
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]
    updated = core.replace_namespaced_pod_ephemeralcontainers(name, HUB_NS, pod)
    (debugger,) = updated.spec.ephemeral_containers
    assert debugger.security_context.capabilities.drop == ["ALL"]
    assert debugger.security_context.allow_privilege_escalation is False


def resize(core: client.CoreV1Api, name: str, memory: str) -> Any:
    body = {"spec": {"containers": [{"name": "notebook", "resources": {"limits": {"memory": memory}, "requests": {"memory": "2Gi"}}}]}}
    return core.patch_namespaced_pod_resize(name, HUB_NS, body)


def test_resize_is_capped_by_the_owners_groups(notebook: tuple[str, client.CoreV1Api]) -> None:
    name, core = notebook
    resized = resize(core, name, "12Gi")  # large-memory allows 16Gi
    assert resized.spec.containers[0].resources.limits["memory"] == "12Gi"
    with pytest.raises(ApiException) as err:
        resize(core, name, "64Gi")
    assert "[resources/memory]" in denial_of(err.value)


def test_scope_and_update_kind_reach_the_audit_log(notebook: tuple[str, client.CoreV1Api], cluster: Any) -> None:  # noqa: F811
    """How each request was decided is in the API server's audit log: the notebook's create
    carries its scope; the operator's finalizer update says it was not re-decided."""
    import time

    name, _ = notebook
    deadline = time.monotonic() + 30
    while True:
        events = [e for e in cluster.audit_events() if (e.get("objectRef") or {}).get("name") == name and e.get("stage") == "ResponseComplete"]
        created = [e for e in events if e.get("verb") == "create" and not (e.get("objectRef") or {}).get("subresource")]
        quick = [e for e in events if (e.get("annotations") or {}).get("mutate.jovial-guard.io/update") == "metadata-only"]
        if (created and quick) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert created and created[0]["annotations"]["mutate.jovial-guard.io/scope"] == "notebook"
    assert quick, "the finalizer update was not admitted as metadata-only"
