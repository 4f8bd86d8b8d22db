"""End to end with a real kube-apiserver: our webhooks over TLS in its admission chain.

etcd (Debian) + kube-apiserver (built from the Go module proxy, cached by
scripts/setup.d/50-kube-apiserver.sh) + a real OPA + ``jovial-guard webhook serve`` as a
process. The webhook configurations are the ones in deploy/, with ``clientConfig`` pointed
at the loopback webhook and our CA as ``caBundle``. The hub namespace enforces Pod Security
"restricted" through the API server's own PodSecurity admission.
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.admission.tls import CertPaths, write_webhook_certs
from jovial_guard.policy.opa_process import (
    DEFAULT_POLICY_DIR,
    ManagedOpa,
    free_loopback_port,
)
from jovial_guard.processes import stop_group
from tests.admission.kubespawner_pods import kubespawner_pod

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

REPO = Path(__file__).resolve().parents[2]
HUB_NS = "jhub"
PSS_ONLY_NS = "pss-only"
GUARDED = "jovial-guard.io/guarded"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKubeCluster]:
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as running:  # type: ignore[arg-type]
        yield running


@pytest.fixture(scope="module")
def e2e_opa() -> Iterator[ManagedOpa]:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        yield opa


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_webhook_certs(tmp_path_factory.mktemp("e2e-webhook"), dns_names=["localhost"], ip_addresses=["127.0.0.1"])


class WebhookProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture(scope="module")
def webhook(e2e_opa: ManagedOpa, certs: CertPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    port = free_loopback_port()
    log = open(tmp_path_factory.mktemp("webhook-log") / "webhook.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", e2e_opa.url, "--cert", str(certs.cert),
         "--key", str(certs.key), "--host", "127.0.0.1", "--port", str(port), "--revision-interval", "0.5",
         "--expected-policy-dir", str(DEFAULT_POLICY_DIR)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    running = WebhookProcess(proc, port)
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    break
        except Exception:  # noqa: BLE001 - poll until ready
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"webhook did not become ready: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield running
    finally:
        running.stop()


def webhook_configurations(port: int, ca_file: Path) -> list[dict[str, Any]]:
    """The chart's fail-closed configurations, pointed at the loopback webhook."""
    from tests.admission.jg_chart import loopback_configurations

    return loopback_configurations(port, ca_file)


@pytest.fixture(scope="module")
def api(cluster: LocalKubeCluster, webhook: WebhookProcess, certs: CertPaths) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(str(cluster.kubeconfig))
    core = client.CoreV1Api(api_client)
    restricted = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
    for name in (HUB_NS, PSS_ONLY_NS):
        # The webhooks' namespaceSelector follows install.sh's label; pss-only is not guarded.
        labels = {**restricted, **({GUARDED: "true"} if name == HUB_NS else {})}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    reg = client.AdmissionregistrationV1Api(api_client)
    mutating, validating = webhook_configurations(webhook.port, certs.ca_cert)
    reg.create_mutating_webhook_configuration(mutating)
    reg.create_validating_webhook_configuration(validating)
    _wait_for_webhooks(api_client)
    yield api_client
    api_client.close()


def _wait_for_webhooks(api_client: client.ApiClient, timeout: float = 60.0) -> None:
    """The API server learns webhook configurations through an informer: wait until a
    dry-run of a privileged pod is refused by our webhook (not by PodSecurity alone)."""
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "webhook-probe"},
             "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27",
                                      "securityContext": {"privileged": True}}]}}
    deadline = time.monotonic() + timeout
    while True:
        try:
            create_pod(api_client, probe, dry_run=True)
        except ApiException as exc:
            if "jovial-guard.io" in denial_of(exc):
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the API server did not start calling the jovial-guard webhooks")
        time.sleep(0.2)


def raw_pod(username: str, namespace: str = HUB_NS, **kwargs: Any) -> dict[str, Any]:
    """KubeSpawner's pod exactly as it would POST it (numeric quantities and all)."""
    return asyncio.run(kubespawner_pod(username=username, namespace=namespace, **kwargs))


def create_pod(api: client.ApiClient, pod: dict[str, Any], namespace: str = HUB_NS, *, dry_run: bool = False) -> dict[str, Any]:
    """POST the pod JSON as KubeSpawner (kubernetes_asyncio) would: numbers stay numbers."""
    pods = DynamicClient(api).resources.get(api_version="v1", kind="Pod")
    params = [("dryRun", "All")] if dry_run else []
    return dict(pods.create(body=pod, namespace=namespace, query_params=params).to_dict())


def denial_of(exc: ApiException) -> str:
    body = json.loads(exc.body)
    return str(body.get("message", ""))


def test_dangerous_pod_is_denied_with_our_message(api: client.ApiClient) -> None:
    pod = raw_pod("mallory")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True, "runAsUser": 0}
    pod["spec"]["hostPID"] = True
    with pytest.raises(ApiException) as err:
        create_pod(api, pod)
    message = denial_of(err.value)
    assert err.value.status in (400, 403)
    assert 'admission webhook "mutate.jovial-guard.io" denied the request' in message
    assert "[pod-security/privileged]" in message
    assert "[pod-security/host-namespaces]" in message


def test_notebook_pod_is_admitted_and_stored_hardened(api: client.ApiClient) -> None:
    pod = raw_pod("alice", groups=("astro",))
    created = create_pod(api, pod)
    stored = client.CoreV1Api(api).read_namespaced_pod(created["metadata"]["name"], HUB_NS)
    psc = stored.spec.security_context
    assert (psc.seccomp_profile.type, psc.seccomp_profile.localhost_profile) == ("Localhost", "jovial-guard/notebook.json")
    # Only a node whose agent installed the profile may run it.
    assert stored.spec.node_selector == {"jovial-guard.io/profiles-ready": "true"}
    assert psc.run_as_non_root is True and psc.run_as_user == 1000
    (container,) = stored.spec.containers
    sc = container.security_context
    assert sc.read_only_root_filesystem is True
    assert sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"]
    assert {m.mount_path for m in container.volume_mounts} >= {"/tmp", "/home/jovyan"}
    assert container.resources.limits["cpu"] == "1"  # the API server's canonical form of KubeSpawner's 1.0


def test_audit_annotations_reach_the_api_server_audit_log(api: client.ApiClient, cluster: LocalKubeCluster) -> None:
    created = create_pod(api, raw_pod("audrey"))
    name = created["metadata"]["name"]
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        events = [e for e in cluster.audit_events() if e.get("verb") == "create" and e.get("stage") == "ResponseComplete"
                  and (e.get("objectRef") or {}).get("name") == name]
        time.sleep(0.2)
    (event,) = events
    annotations = event["annotations"]
    assert annotations["mutate.jovial-guard.io/policy-revision"].startswith("sha256:")
    assert len(annotations["mutate.jovial-guard.io/decision-id"]) == 32
    assert annotations["validate.jovial-guard.io/policy-revision"] == annotations["mutate.jovial-guard.io/policy-revision"]
    mutation = json.loads(annotations["mutation.webhook.admission.k8s.io/round_0_index_0"])
    assert mutation == {"configuration": "jovial-guard", "webhook": "mutate.jovial-guard.io", "mutated": True}


def test_debug_containers_are_hardened_or_denied(api: client.ApiClient) -> None:
    """kubectl debug adds ephemeral containers through pods/ephemeralcontainers (UPDATE)."""
    core = client.CoreV1Api(api)
    name = create_pod(api, raw_pod("ella"))["metadata"]["name"]

    def with_debugger(security_context: dict[str, Any] | None) -> dict[str, Any]:
        pod = client.ApiClient().sanitize_for_serialization(core.read_namespaced_pod(name, HUB_NS))
        container: dict[str, Any] = {"name": f"debug{len(pod['spec'].get('ephemeralContainers') or [])}",
                                     "image": "quay.io/jupyter/base-notebook:2024-05-27"}
        if security_context is not None:
            container["securityContext"] = security_context
        pod["spec"].setdefault("ephemeralContainers", []).append(container)
        return pod

    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod_ephemeralcontainers(name, HUB_NS, with_debugger({"privileged": True}))
    assert "[pod-security/privileged]" in denial_of(err.value)
    updated = core.replace_namespaced_pod_ephemeralcontainers(name, HUB_NS, with_debugger(None))
    (debugger,) = updated.spec.ephemeral_containers
    assert debugger.security_context.capabilities.drop == ["ALL"]
    assert debugger.security_context.allow_privilege_escalation is False


def test_the_patch_is_what_makes_the_pod_pass_pod_security_restricted(api: client.ApiClient) -> None:
    """The API server's PodSecurity admission alone (namespace without our webhook):
    KubeSpawner's raw pod is refused; the pod our webhook patched is admitted."""
    pod = raw_pod("bob")
    pod["metadata"]["name"] = "raw-bob"
    with pytest.raises(ApiException) as err:
        create_pod(api, pod, namespace=PSS_ONLY_NS)
    assert "violates PodSecurity" in denial_of(err.value)
    clean = create_pod(api, raw_pod("bob2"))
    clean["metadata"] = {"name": "patched-bob", "annotations": clean["metadata"].get("annotations", {})}
    clean.pop("status", None)
    create_pod(api, clean, namespace=PSS_ONLY_NS)


def test_group_annotations_count_only_when_the_hub_creates_the_pod(api: client.ApiClient, cluster: LocalKubeCluster) -> None:
    """The API server's userInfo reaches the policy: KubeSpawner's pod for a staff member
    asking for the large-memory profile is admitted when the hub's service account creates
    it, and refused when anyone else (here the cluster admin) does."""
    hub_sa = "system:serviceaccount:jhub:hub"
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(HUB_NS, {"metadata": {"name": "hub"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get"]}]})
    rbac.create_namespaced_role_binding(HUB_NS, {"metadata": {"name": "hub"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
                                                 "subjects": [{"kind": "User", "name": hub_sa, "apiGroup": "rbac.authorization.k8s.io"}]})
    pod = raw_pod("zoe", groups=("staff",), profile="large-memory")
    with pytest.raises(ApiException) as err:
        create_pod(api, pod)
    assert "[profiles/not-allowed]" in denial_of(err.value)
    as_hub = config.new_client_from_config(str(cluster.kubeconfig))
    as_hub.set_default_header("Impersonate-User", hub_sa)
    try:
        created = create_pod(as_hub, pod)
    finally:
        as_hub.close()
    assert created["spec"]["containers"][0]["resources"]["limits"]["memory"] == "8589934592"  # KubeSpawner's 8G


def test_a_new_per_user_namespace_is_guarded_by_its_label(api: client.ApiClient) -> None:
    """KubeSpawner's enable_user_namespaces: a namespace per user, labelled through
    user_namespace_labels; the webhooks follow the label, not one namespace name."""
    core = client.CoreV1Api(api)
    for name, labels in (("jupyter-ursula", {GUARDED: "true"}), ("unguarded-ursula", {})):
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    bad = raw_pod("ursula", namespace="jupyter-ursula")
    bad["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as err:
        create_pod(api, bad, namespace="jupyter-ursula")
    assert "[pod-security/privileged]" in denial_of(err.value)
    created = create_pod(api, raw_pod("ursula", namespace="jupyter-ursula"), namespace="jupyter-ursula")
    stored = core.read_namespaced_pod(created["metadata"]["name"], "jupyter-ursula")
    assert stored.spec.containers[0].security_context.read_only_root_filesystem is True
    assert stored.spec.security_context.seccomp_profile.type == "Localhost"
    # Without the label the webhooks are not called: the raw pod is stored as sent.
    plain = create_pod(api, raw_pod("ursula", namespace="unguarded-ursula"), namespace="unguarded-ursula")
    assert (plain["spec"].get("securityContext") or {}).get("seccompProfile") is None


def test_dry_run_is_decided_and_not_stored(api: client.ApiClient) -> None:
    pod = raw_pod("dora")
    result = create_pod(api, pod, dry_run=True)
    assert result["spec"]["securityContext"]["seccompProfile"]["type"] == "Localhost"
    names = [p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(HUB_NS).items]
    assert pod["metadata"]["name"] not in names


def test_deployment_template_is_hardened_and_bad_one_denied(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    template = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "worker"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}}, "template": template}}
    created = apps.create_namespaced_deployment(HUB_NS, deployment)
    pod_spec = created.spec.template.spec
    assert pod_spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod_spec.containers[0].security_context.capabilities.drop == ["ALL"]
    bad = copy.deepcopy(deployment)
    bad["metadata"]["name"] = "bad-worker"
    bad["spec"]["template"]["spec"]["hostNetwork"] = True
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(HUB_NS, bad)
    assert "[pod-security/host-namespaces]" in denial_of(err.value)


def test_update_that_adds_danger_is_denied(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    current = apps.read_namespaced_deployment("worker", HUB_NS)
    doc = client.ApiClient().sanitize_for_serialization(current)
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("worker", HUB_NS, doc)
    assert "[pod-security/privileged]" in denial_of(err.value)


def test_every_chart_object_is_accepted_by_the_api_server(api: client.ApiClient) -> None:
    """Strict server-side validation (unknown fields are errors) with dry-run, for every value
    set of the chart (kinds of cert-manager and the Prometheus operator: no CRDs here)."""
    from tests.admission.jg_chart import NAMESPACE, VALUE_SETS, render

    dyn = DynamicClient(api)
    dyn.resources.get(api_version="v1", kind="Namespace").create(body={
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    checked = 0
    for value_set in VALUE_SETS:
        docs = [d for d in render(value_set) if not d["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
        for doc in docs:
            if doc["kind"].endswith("WebhookConfiguration"):  # the test's own copies hold these names
                doc = {**doc, "metadata": {**doc["metadata"], "name": doc["metadata"]["name"] + "-dry-run"}}
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            namespace = doc["metadata"].get("namespace") if resource.namespaced else None
            resource.create(body=doc, namespace=namespace, query_params=[("dryRun", "All"), ("fieldValidation", "Strict")])
            checked += 1
    assert checked > 40
    # Every pod the chart makes (webhook, hook Jobs, bundle service, audit) passes Pod Security "restricted".
    docs = render() + render("bundles+cluster-audit+namespace-modes")
    for doc in {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}.values():
        dyn.resources.get(api_version="v1", kind="ServiceAccount").create(body=doc, namespace=NAMESPACE)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(workloads) >= 6
    for doc in workloads:
        template = doc["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": doc["metadata"]["name"] + "-pod", **template["metadata"]},
               "spec": template["spec"]}
        create_pod(api, pod, namespace=NAMESPACE, dry_run=True)


def test_opa_down_means_pods_are_denied(api: client.ApiClient, e2e_opa: ManagedOpa) -> None:
    e2e_opa.kill()
    with pytest.raises(ApiException) as err:
        create_pod(api, raw_pod("carol"))
    message = denial_of(err.value)
    assert "[policy-engine-unavailable]" in message, message


def test_webhook_down_means_pods_are_denied(api: client.ApiClient, webhook: WebhookProcess) -> None:
    webhook.stop()
    with pytest.raises(ApiException) as err:
        create_pod(api, raw_pod("dave"))
    assert "failed calling webhook" in denial_of(err.value)
