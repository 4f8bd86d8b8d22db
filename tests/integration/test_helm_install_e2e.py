"""`helm install` of the chart onto a real kube-apiserver, then KubeSpawner's pod through it.

No kubelet runs here: the API server stores the release's objects but runs no pod. The webhook
therefore runs on the host, exactly as the chart's pod would run it: with the serving
certificate Helm generated (read back from the stored Secret), the policies prepared from the
release's ConfigMap by ``jovial-guard webhook prepare-policies`` (the init container's command)
and the webhook container's own arguments (the default engine compiles those policies at
start; the pod runs no OPA). The chart's ``webhook.url`` points its configurations at that process;
the readiness gate Job (which needs a kubelet) is replaced by running its command on the host.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jovial_guard.policy.opa_process import free_loopback_port
from jovial_guard.processes import stop_group
from tests.admission.jg_chart import CHART, helm, one, template
from tests.admission.kubespawner_pods import kubespawner_pod

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

RELEASE = "jovial-guard"
NAMESPACE = "jovial-guard"
HUB_NS = "jhub"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    work = tmp_path_factory.mktemp("helm-e2e")
    procs: list[subprocess.Popen[bytes]] = []
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as cluster:  # type: ignore[arg-type]
        api = config.new_client_from_config(str(cluster.kubeconfig))
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": HUB_NS, "labels": {
            "jovial-guard.io/guarded": "true", "pod-security.kubernetes.io/enforce": "restricted"}}})
        core.create_namespaced_service_account(HUB_NS, {"metadata": {"name": "default"}})
        port = free_loopback_port()
        values = ["--set", f"webhook.url=https://127.0.0.1:{port}", "--set", "tls.extraIpAddresses={127.0.0.1}",
                  "--set", "installGate.enabled=false"]
        helm_env = {"KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(work / "helm-cache"),
                    "HELM_CONFIG_HOME": str(work / "helm-config"), "HELM_DATA_HOME": str(work / "helm-data")}
        started = time.monotonic()
        installed = run(helm(), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", *values, env=helm_env)
        assert installed.returncode == 0, installed.stderr
        install_seconds = time.monotonic() - started

        # What the pod's init container and containers would do, on the host.
        tls = core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE).data
        for key in ("tls.crt", "tls.key", "ca.crt"):
            (work / key).write_bytes(base64.b64decode(tls[key]))
        (work / "tls.key").chmod(0o600)
        overlay = work / "policy-data.json"
        overlay.write_text(core.read_namespaced_config_map(f"{RELEASE}-webhook", NAMESPACE).data["policy-data.json"])
        cli = [sys.executable, "-m", "jovial_guard", "webhook"]
        prepared = run(*cli, "prepare-policies", "--overlay", str(overlay), "--out", str(work / "policies"))
        assert prepared.returncode == 0, prepared.stderr
        # The webhook container's own arguments (the default engine: the prepared policies
        # compiled at start, no OPA); only paths and the address change.
        pod = client.AppsV1Api(api).read_namespaced_deployment(f"{RELEASE}-webhook", NAMESPACE).spec.template.spec
        assert [c.name for c in pod.containers] == ["webhook"]
        (container,) = pod.containers
        args = [a.replace("/tls/", f"{work}/").replace("/policies/policies", str(work / "policies"))
                .replace("--port=8443", f"--port={port}") for a in container.args]
        assert "--engine=wasm" in args and f"--policy-dir={work / 'policies'}" in args, args
        log = open(work / "webhook.log", "wb")
        procs.append(subprocess.Popen(
            [*cli, *container.command[2:], *args, "--host", "127.0.0.1", "--revision-interval", "0.5"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))
        try:
            gate = run(*cli, "wait-ready", "--url", f"https://127.0.0.1:{port}/readyz", "--ca", str(work / "ca.crt"), "--timeout", "60")
            assert gate.returncode == 0, gate.stderr + (work / "webhook.log").read_text()[-2000:]
            ready = urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=5,
                                           context=ssl.create_default_context(cafile=str(work / "ca.crt"))).read().decode()
            yield SimpleNamespace(api=api, cluster=cluster, work=work, env=helm_env, values=values, port=port,
                                  install_seconds=install_seconds, revision=prepared.stdout.strip(), ready=ready)
        finally:
            for proc in procs:
                stop_group(proc)
        api.close()


def create_pod(api: client.ApiClient, pod: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    pods = DynamicClient(api).resources.get(api_version="v1", kind="Pod")
    return dict(pods.create(body=pod, namespace=HUB_NS, query_params=[("dryRun", "All")] if dry_run else []).to_dict())


def wait_for_webhooks(api: client.ApiClient, timeout: float = 60.0) -> None:
    """Until the API server (an informer) calls the release's webhooks: a privileged dry-run is refused by us."""
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
             "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27", "securityContext": {"privileged": True}}]}}
    deadline = time.monotonic() + timeout
    while True:
        try:
            create_pod(api, probe, dry_run=True)
        except ApiException as exc:
            if "jovial-guard.io" in json.loads(exc.body).get("message", ""):
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the API server never called the release's webhooks")
        time.sleep(0.2)


def test_the_release_installs_its_objects_and_hook_configurations(release: SimpleNamespace) -> None:
    reg = client.AdmissionregistrationV1Api(release.api)
    mutating = reg.read_mutating_webhook_configuration(RELEASE)
    validating = reg.read_validating_webhook_configuration(RELEASE)
    ca = (release.work / "ca.crt").read_bytes()
    for config_ in (mutating, validating):
        (hook,) = config_.webhooks
        assert hook.failure_policy == "Fail" and hook.client_config.url.startswith(f"https://127.0.0.1:{release.port}/")
        assert base64.b64decode(hook.client_config.ca_bundle) == ca
    assert reg.read_validating_webhook_configuration(f"{RELEASE}-backstop").webhooks[0].failure_policy == "Ignore"
    deployment = client.AppsV1Api(release.api).read_namespaced_deployment(f"{RELEASE}-webhook", NAMESPACE)
    assert deployment.spec.replicas == 2
    assert release.revision in release.ready  # the revision /readyz reports is the prepared one


def test_kubespawner_pod_is_admitted_hardened_and_a_dangerous_one_refused(release: SimpleNamespace) -> None:
    wait_for_webhooks(release.api)
    import asyncio

    pod = asyncio.run(kubespawner_pod(username="helm-user", namespace=HUB_NS))
    stored = create_pod(release.api, pod)
    container = stored["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert stored["spec"]["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    bad = asyncio.run(kubespawner_pod(username="helm-mallory", namespace=HUB_NS))
    bad["spec"]["hostPID"] = True
    with pytest.raises(ApiException) as err:
        create_pod(release.api, bad)
    assert 'admission webhook "mutate.jovial-guard.io" denied the request' in json.loads(err.value.body)["message"]


def test_fail_closed_configurations_wait_for_the_readiness_gate(release: SimpleNamespace) -> None:
    """With the gate on, Helm creates the Job and waits; until the webhook answers, neither
    fail-closed configuration exists, so pod creation in guarded namespaces is never blocked
    (the backstop is there, failurePolicy Ignore). No kubelet runs the Job: Helm times out."""
    gated = ["gated", str(CHART), "--namespace", "jg-gated", "--create-namespace", "--timeout", "20s",
             "--set", "preUninstall.deleteWebhookConfigurations.enabled=false", "--set", "notebookNetworkPolicies.enabled=false"]
    proc = subprocess.Popen([helm(), "install", *gated], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **release.env})
    try:
        batch = client.BatchV1Api(release.api)
        reg = client.AdmissionregistrationV1Api(release.api)
        deadline = time.monotonic() + 60
        while not any(j.metadata.name == "gated-jovial-guard-webhook-ready" for j in batch.list_namespaced_job("jg-gated").items):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.3)
        assert client.AppsV1Api(release.api).read_namespaced_deployment("gated-jovial-guard-webhook", "jg-gated")
        assert "gated-jovial-guard" not in {c.metadata.name for c in reg.list_mutating_webhook_configuration().items}
        validating = {c.metadata.name for c in reg.list_validating_webhook_configuration().items}
        assert "gated-jovial-guard" not in validating and "gated-jovial-guard-backstop" in validating
        import asyncio

        pod = asyncio.run(kubespawner_pod(username="during-install", namespace=HUB_NS))
        assert create_pod(release.api, pod)["metadata"]["name"]
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "failed post-install" in err and "timed out" in err
        assert "gated-jovial-guard" not in {c.metadata.name for c in reg.list_mutating_webhook_configuration().items}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run(helm(), "uninstall", "gated", "--namespace", "jg-gated", "--no-hooks", env=release.env)


def test_upgrade_keeps_the_certificate_and_ca(release: SimpleNamespace) -> None:
    core = client.CoreV1Api(release.api)
    before = core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE).data
    upgraded = run(helm(), "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *release.values, env=release.env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE).data == before
    ca = client.AdmissionregistrationV1Api(release.api).read_mutating_webhook_configuration(RELEASE).webhooks[0].client_config.ca_bundle
    assert base64.b64decode(ca) == base64.b64decode(before["ca.crt"])
    # A shorter renewal margin than the remaining validity keeps it; one longer renews it, same CA.
    renewed = run(helm(), "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *release.values,
                  "--set", "tls.renewBeforeDays=400", env=release.env)
    assert renewed.returncode == 0, renewed.stderr
    after = core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE).data
    assert after["tls.crt"] != before["tls.crt"] and after["ca.crt"] == before["ca.crt"]


def test_uninstall_hook_removes_exactly_the_configurations(release: SimpleNamespace) -> None:
    """The pre-delete hook's ServiceAccount and RBAC, with the hook's command run on the host."""
    docs = template(*release.values)
    dyn = DynamicClient(release.api)
    for doc in docs:
        if doc["metadata"]["name"].endswith("-uninstall") and doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            doc["metadata"].pop("annotations", None)
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            resource.create(body=doc, namespace=NAMESPACE if resource.namespaced else None)
    core = client.CoreV1Api(release.api)
    token = core.create_namespaced_service_account_token(f"{RELEASE}-webhook-uninstall", NAMESPACE, {"spec": {}}).status.token
    (release.work / "sa-token").write_text(token)
    command = one(docs, "Job", "-uninstall")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["jovial-guard", "webhook", "delete-configurations"]
    hook_args = [*command[3:], "--server", release.cluster.url, "--token-file", str(release.work / "sa-token"),
                 "--ca", str(release.cluster.dir / "pki" / "ca.crt")]
    deleted = run(sys.executable, "-m", "jovial_guard", "webhook", "delete-configurations", *hook_args)
    assert deleted.returncode == 0, deleted.stderr
    reg = client.AdmissionregistrationV1Api(release.api)
    names = {c.metadata.name for c in reg.list_validating_webhook_configuration().items}
    assert RELEASE not in names and f"{RELEASE}-backstop" in names  # the backstop goes with the release
    assert RELEASE not in {c.metadata.name for c in reg.list_mutating_webhook_configuration().items}
    # The role reaches nothing else: deleting the backstop is forbidden.
    denied = run(sys.executable, "-m", "jovial_guard", "webhook", "delete-configurations", f"{RELEASE}-backstop", *hook_args[1:])
    assert denied.returncode != 0 and "403" in denied.stderr
    removed = run(helm(), "uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks", env=release.env)
    assert removed.returncode == 0, removed.stderr
    assert f"{RELEASE}-backstop" not in {c.metadata.name for c in reg.list_validating_webhook_configuration().items}
    # With the configurations gone, the hub namespace's pods no longer reach the webhook: the raw
    # KubeSpawner pod is now refused by Pod Security "restricted" alone (no hardening patch).
    import asyncio

    raw = asyncio.run(kubespawner_pod(username="after-uninstall", namespace=HUB_NS))
    deadline = time.monotonic() + 60
    while True:
        with pytest.raises(ApiException) as err:
            create_pod(release.api, raw, dry_run=True)
        message = json.loads(err.value.body)["message"]
        if "jovial-guard.io" not in message:
            break
        assert time.monotonic() < deadline, message
        time.sleep(0.3)
    assert "violates PodSecurity" in message
