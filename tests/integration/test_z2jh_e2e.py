"""zero-to-jupyterhub's real chart through a real kube-apiserver with our webhooks.

The chart (tests/vectors/z2jh/, rendered by helm v3.22.0) is applied object by object, as
its installer (a cluster admin) would, into namespaces labelled for the webhooks and
enforcing Pod Security "restricted". No controller-manager runs here, so the Pods z2jh's
Deployments, StatefulSets, DaemonSets and Jobs would get are created from their stored
templates as the respective Kubernetes controller (impersonated). Then KubeSpawner's
notebook pods, built by the chart's own jupyterhub_config.py, are created as the hub's
service account. Everything z2jh makes must be admitted; every notebook stored hardened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.admission.z2jh_chart import find_helm, hub_config, notebook_pod, pod_from_template, render

from .test_apiserver_e2e import (  # noqa: F401 - module-scoped fixtures: one control plane here
    GUARDED,
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

HELM = find_helm()
if HELM is None:
    # A missing build must not turn the chart proof into a green skip.
    pytest.fail("helm is not built: run scripts/test.d/60-helm.sh (./guard test does)", pytrace=False)

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from jovial_guard.normalize import POD_TEMPLATE_PATHS  # noqa: E402

CONTROLLER = {"Deployment": "replicaset-controller", "StatefulSet": "statefulset-controller",
              "DaemonSet": "daemon-set-controller", "Job": "job-controller"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
#: One namespace per rendering (their object names overlap).
NAMESPACES = {"jovial-guard-values": HUB_NS, "defaults": "z2jh-defaults", "autohttps": "z2jh-https"}


def as_user(cluster_: Any, username: str) -> client.ApiClient:
    impersonating = config.new_client_from_config(str(cluster_.kubeconfig))
    impersonating.set_default_header("Impersonate-User", username)
    return impersonating


def apply(api_client: client.ApiClient, doc: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """Create one rendered object; cluster-scoped objects shared by renderings once."""
    dyn = DynamicClient(api_client)
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    body = {**doc, "metadata": {**doc["metadata"], **({"namespace": namespace} if resource.namespaced else {})}}
    try:
        return dict(resource.create(body=body, namespace=namespace if resource.namespaced else None).to_dict())
    except ApiException as exc:
        if exc.status == 409 and not resource.namespaced:
            return None
        raise


@pytest.fixture(scope="module")
def namespaces(api: client.ApiClient) -> Iterator[dict[str, str]]:  # noqa: F811
    core = client.CoreV1Api(api)
    for name in NAMESPACES.values():
        if name == HUB_NS:
            continue
        core.create_namespace({"metadata": {"name": name, "labels": {**RESTRICTED, GUARDED: "true"}}})
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    yield NAMESPACES


@pytest.mark.parametrize("rendering", list(NAMESPACES))
def test_every_z2jh_object_and_pod_is_admitted(api: client.ApiClient, cluster: Any, namespaces: dict[str, str], rendering: str) -> None:  # noqa: F811
    namespace = namespaces[rendering]
    docs = render(HELM, rendering)  # type: ignore[arg-type]
    stored: list[dict[str, Any]] = []
    for doc in docs:
        try:
            created = apply(api, doc, namespace)
        except ApiException as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} refused: {denial_of(exc)}")
        if created is not None and doc["kind"] in POD_TEMPLATE_PATHS:
            stored.append(created)
    assert {d["kind"] for d in stored} >= {"Deployment", "DaemonSet"}
    for obj in stored:
        pod = pod_from_template(obj, POD_TEMPLATE_PATHS[obj["kind"]])
        pod["metadata"]["namespace"] = namespace
        pod["metadata"]["ownerReferences"][0]["uid"] = obj["metadata"]["uid"]
        controller = as_user(cluster, f"system:serviceaccount:kube-system:{CONTROLLER[obj['kind']]}")
        try:
            created_pod = create_pod(controller, pod, namespace=namespace)
        except ApiException as exc:
            pytest.fail(f"pod of {obj['kind']}/{obj['metadata']['name']} refused: {denial_of(exc)}")
        finally:
            controller.close()
        assert created_pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_notebooks_from_the_charts_hub_config_are_stored_hardened(api: client.ApiClient, cluster: Any) -> None:  # noqa: F811
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role_binding(HUB_NS, {
        "metadata": {"name": "hub-pods-e2e"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
        "subjects": [{"kind": "User", "name": f"system:serviceaccount:{HUB_NS}:hub", "apiGroup": "rbac.authorization.k8s.io"}],
    })
    docs = render(HELM, "jovial-guard-values")  # type: ignore[arg-type]
    hub = hub_config(docs)
    as_hub = as_user(cluster, f"system:serviceaccount:{HUB_NS}:hub")
    try:
        for username, groups, profile in (("nadia", ("astro",), "default"), ("olga", ("large-memory",), "large-memory")):
            pod = asyncio.run(notebook_pod(hub, username=username, groups=groups, profile=profile))
            created = create_pod(as_hub, pod)
            stored = client.CoreV1Api(api).read_namespaced_pod(created["metadata"]["name"], HUB_NS)
            (container,) = stored.spec.containers
            assert container.security_context.read_only_root_filesystem is True
            assert container.security_context.capabilities.drop == ["ALL"]
            assert stored.spec.security_context.run_as_non_root is True
            egress = {k for k in stored.metadata.labels if k.startswith("egress.jovial-guard.io/")}
            assert egress == ({"egress.jovial-guard.io/astro"} if "astro" in groups else set())
    finally:
        as_hub.close()
