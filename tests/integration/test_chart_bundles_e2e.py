"""The chart in signed-bundle mode, installed by `helm install` onto a real kube-apiserver.

No kubelet runs here, so the release's pods run as host processes, each as its container
would: the bundle service (`jovial-guard policy serve-bundles`) authenticates as the chart's
own ServiceAccount (a token of it), so it has exactly the chart's Role; the webhook's OPA runs
with the container's own arguments and the OPA configuration, authz policy and token digest
read back from the installed release. Only the addresses change: the bundle Service's cluster
DNS name becomes the host process's loopback port, and OPA's ports become free ones.
The install order is the documented one: namespace, `jovial-guard policy publish`, `helm install`.
The cluster audit's command runs once as the chart's audit ServiceAccount against the audit pod's
OPA (which reports no status) and writes a PolicyReport; the webhook's account may only get namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, free_loopback_port
from jovial_guard.policy.store import PolicyStore
from jovial_guard.processes import stop_group
from tests.admission.jg_chart import CHART, helm

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from kubernetes import client, config  # noqa: E402

RELEASE = "jovial-guard"
NAMESPACE = "jovial-guard"
CONFIGMAP = f"{NAMESPACE}/jovial-guard-policy"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def token_kubeconfig(cluster: LocalKubeCluster, token: str, path: Path) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster.url, "certificate-authority": str(cluster.dir / "pki" / "ca.crt")}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}]}))
    return path


def start_opa(pod: Any, chart_config: dict[str, str], config_key: str, work: Path, bundle_port: int,
              procs: list[subprocess.Popen[bytes]]) -> tuple[str, str]:
    """The pod's OPA on the host: (its URL, its token). Only addresses and paths are changed."""
    assert [c.name for c in pod.init_containers] == ["opa-token"]
    token_dir = work / "opa-token"
    token_dir.mkdir(parents=True)
    made = run(sys.executable, "-c", pod.init_containers[0].command[2].replace("/opa-token/", f"{token_dir}/"))
    assert made.returncode == 0, made.stderr
    opa_config = json.loads(chart_config[config_key])
    assert opa_config["services"]["policy_store"]["url"] == f"http://{RELEASE}-bundles.{NAMESPACE}.svc:8282"
    opa_config["services"]["policy_store"]["url"] = f"http://127.0.0.1:{bundle_port}"
    (work / "opa-config").mkdir()
    (work / "opa-config" / "opa-config.json").write_text(json.dumps(opa_config))
    (work / "opa-authz").mkdir()
    (work / "opa-authz" / "authz.rego").write_text(chart_config["authz.rego"])
    container = next(c for c in pod.containers if c.name == "opa")
    port, diagnostic = free_loopback_port(), free_loopback_port()
    args = [a.replace("127.0.0.1:8181", f"127.0.0.1:{port}").replace("127.0.0.1:8282", f"127.0.0.1:{diagnostic}")
            .replace("/opa-config/", f"{work}/opa-config/").replace("/opa-authz/", f"{work}/opa-authz/")
            .replace("/opa-token/", f"{token_dir}/") for a in container.args]
    opa = shutil.which("opa")
    assert opa, "opa is not on PATH (./guard env links it)"
    procs.append(start([opa, *args], work / "opa.log"))
    return f"http://127.0.0.1:{port}", (token_dir / "token").read_text()


def opa_get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    work = tmp_path_factory.mktemp("chart-bundles")
    procs: list[subprocess.Popen[bytes]] = []
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as cluster:  # type: ignore[arg-type]
        api = config.new_client_from_config(str(cluster.kubeconfig))
        core = client.CoreV1Api(api)
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
            store = PolicyStore(work / "store")
            first = store.add(DEFAULT_POLICY_DIR)
            store.activate(first)
            cli = [sys.executable, "-m", "jovial_guard", "policy"]
            published = run(*cli, "publish", "--store", str(work / "store"), "--kubeconfig", str(cluster.kubeconfig), "--configmap", CONFIGMAP)
            assert published.returncode == 0 and f"published {first}" in published.stdout, published.stderr
            helm_env = {"KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": str(work / "helm-cache"),
                        "HELM_CONFIG_HOME": str(work / "helm-config"), "HELM_DATA_HOME": str(work / "helm-data")}
            values = ["--set", "policy.bundles.enabled=true", "--set-file", f"policy.publicKey={store.key.public_path}",
                      "--set", f"policy.keyId={store.key.key_id}", "--set", "installGate.enabled=false",
                      "--set", "notebookNetworkPolicies.enabled=false", "--set", "auditCluster.enabled=true",
                      "--set", "namespaceModes.enabled=true",
                      # The sidecar decides (and reports what it activated); the compiled-policy
                      # workers are run against the same bundle service below.
                      "--set", "webhook.engine=opa"]
            installed = run(helm(), "install", RELEASE, str(CHART), "--namespace", NAMESPACE, *values, env=helm_env)
            assert installed.returncode == 0, installed.stderr

            # The bundle service, as its pod: the chart's ServiceAccount, the container's arguments.
            apps = client.AppsV1Api(api)
            bundles_pod = apps.read_namespaced_deployment(f"{RELEASE}-bundles", NAMESPACE).spec.template.spec
            sa_token = core.create_namespaced_service_account_token(bundles_pod.service_account_name, NAMESPACE, {"spec": {}}).status.token
            bundles_kubeconfig = token_kubeconfig(cluster, sa_token, work / "bundles-sa.kubeconfig")
            bundle_port = free_loopback_port()
            args = [a.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=8282", f"--port={bundle_port}")
                    for a in bundles_pod.containers[0].args]
            assert args == [f"--configmap={CONFIGMAP}", "--host=127.0.0.1", f"--port={bundle_port}"]
            procs.append(start([*cli, "serve-bundles", *args, "--kubeconfig", str(bundles_kubeconfig), "--interval", "0.3"], work / "bundles.log"))

            # Each pod's OPA: init container "opa-token", then the "opa" container's arguments.
            chart_config = core.read_namespaced_config_map(f"{RELEASE}-webhook", NAMESPACE).data
            opas = {}
            for component, config_key in (("webhook", "opa-config.json"), ("cluster-audit", "opa-audit-config.json")):
                pod = apps.read_namespaced_deployment(f"{RELEASE}-{component}", NAMESPACE).spec.template.spec
                opas[component] = start_opa(pod, chart_config, config_key, work / component, bundle_port, procs)
            yield SimpleNamespace(core=core, apps=apps, cluster=cluster, store=store, first=first, work=work, cli=cli,
                                  opa_url=opas["webhook"][0], token=opas["webhook"][1], audit_opa=opas["cluster-audit"],
                                  bundle_url=f"http://127.0.0.1:{bundle_port}", bundles_kubeconfig=bundles_kubeconfig)
        finally:
            for proc in procs:
                stop_group(proc)
            api.close()


def served_revision(release: SimpleNamespace, opa: tuple[str, str] | None = None) -> str:
    url, token = opa or (release.opa_url, release.token)
    status, body = opa_get(f"{url}/v1/data/jovial_guard_meta/revision", token)
    return str(json.loads(body).get("result", "")) if status == 200 else ""


def test_the_webhook_opa_activates_the_published_signed_revisions(release: SimpleNamespace) -> None:
    wait_until(lambda: served_revision(release) == release.first, "OPA activating the published revision", timeout=60)
    # The chart's authz policy survives the bundle (a bundle owning all of data would erase it:
    # OPA then answers 500 "authorization policy missing"): no token, no answer; the token
    # opens only the decision and the revision, not the policies.
    status, _ = opa_get(f"{release.opa_url}/v1/data/jovial_guard_meta/revision", None)
    assert status == 401
    status, _ = opa_get(f"{release.opa_url}/v1/policies", release.token)
    assert status == 401
    # Status reporting is on for the webhook's OPA only: the audit's OPA serves the revision
    # too, but a deploy waiting for N replicas must count webhook replicas.
    wait_until(lambda: served_revision(release, release.audit_opa) == release.first, "the audit's OPA activating it")
    with urllib.request.urlopen(f"{release.bundle_url}/replicas", timeout=3) as resp:
        replicas = json.loads(resp.read())
    assert [r["revision"] for r in replicas] == [release.first]

    # A new revision reaches the running OPA through the ConfigMap, without a restart.
    candidate = release.work / "candidate"
    shutil.copytree(DEFAULT_POLICY_DIR, candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["settings"]["enforcement"]["modes"] = {"images/latest": "warn"}
    (candidate / "data.json").write_text(json.dumps(data, indent=2))
    second = release.store.add(candidate)
    release.store.activate(second)
    started = time.monotonic()
    published = run(*release.cli, "publish", "--store", str(release.work / "store"), "--kubeconfig", str(release.cluster.kubeconfig),
                    "--configmap", CONFIGMAP)
    assert published.returncode == 0, published.stderr
    wait_until(lambda: served_revision(release) == second, "OPA activating the second revision", timeout=30)
    print(f"\nsecond revision active in the chart's OPA {time.monotonic() - started:.2f}s after publish")


def test_the_bundle_service_account_reads_only_its_configmap(release: SimpleNamespace) -> None:
    sa_core = client.CoreV1Api(config.new_client_from_config(str(release.bundles_kubeconfig)))
    assert sa_core.read_namespaced_config_map("jovial-guard-policy", NAMESPACE).data["revision"]
    for forbidden in (lambda: sa_core.read_namespaced_config_map(f"{RELEASE}-webhook", NAMESPACE),
                      lambda: sa_core.list_namespaced_config_map(NAMESPACE),
                      lambda: sa_core.patch_namespaced_config_map("jovial-guard-policy", NAMESPACE, {"data": {"x": "y"}}),
                      lambda: sa_core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NAMESPACE)):
        with pytest.raises(client.ApiException) as err:
            forbidden()
        assert err.value.status == 403


def sa_kubeconfig(release: SimpleNamespace, deployment: str) -> Path:
    account = release.apps.read_namespaced_deployment(deployment, NAMESPACE).spec.template.spec.service_account_name
    token = release.core.create_namespaced_service_account_token(account, NAMESPACE, {"spec": {}}).status.token
    return token_kubeconfig(release.cluster, token, release.work / f"{deployment}.kubeconfig")


def test_the_cluster_audit_writes_reports_with_the_charts_rbac_and_opa(release: SimpleNamespace) -> None:
    """The audit container's command, run once, as the chart's audit ServiceAccount (the CRD
    came from the chart's crds/), against the audit pod's OPA."""
    core = release.core
    core.create_namespace({"metadata": {"name": "audited"}})
    core.create_namespaced_service_account("audited", {"metadata": {"name": "default"}})
    core.create_namespaced_pod("audited", {"metadata": {"name": "latest"},
                                           "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:latest"}]}})
    wait_until(lambda: served_revision(release, release.audit_opa), "the audit's OPA serving a revision")
    pod = release.apps.read_namespaced_deployment(f"{RELEASE}-cluster-audit", NAMESPACE).spec.template.spec
    audit = next(c for c in pod.containers if c.name == "audit")
    token_file = release.work / "audit-opa-token"
    token_file.write_text(release.audit_opa[1])
    args = [a for a in audit.args if not a.startswith(("--interval=", "--metrics-port=", "--opa-url=", "--opa-token-file="))]
    kubeconfig = sa_kubeconfig(release, f"{RELEASE}-cluster-audit")
    once = run(sys.executable, "-m", "jovial_guard", *audit.command[1:], *args, "--opa-url", release.audit_opa[0],
               "--opa-token-file", str(token_file), "--kubeconfig", str(kubeconfig), timeout=120)
    assert once.returncode in (0, 1) and "failed" not in once.stderr, once.stdout + once.stderr  # 1: an enforced rule is violated
    report = client.CustomObjectsApi(config.new_client_from_config(str(release.cluster.kubeconfig))).get_namespaced_custom_object(
        "wgpolicyk8s.io", "v1alpha2", "audited", "policyreports", "jovial-guard")
    (latest,) = [r for r in report["results"] if r["rule"] == "images/latest"]
    # Decided by the revision the audit's OPA serves (the test above moved images/latest to warn).
    assert latest["properties"]["revision"] == served_revision(release, release.audit_opa)
    assert latest["result"] == ("warn" if latest["properties"]["mode"] == "warn" else "fail")
    # Nothing beyond its ClusterRole: no Secrets, no writes to pods.
    audit_core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    for forbidden in (lambda: audit_core.list_secret_for_all_namespaces(),
                      lambda: audit_core.delete_namespaced_pod("latest", "audited")):
        with pytest.raises(client.ApiException) as err:
            forbidden()
        assert err.value.status == 403


def test_the_webhook_account_may_only_get_namespaces(release: SimpleNamespace) -> None:
    webhook_core = client.CoreV1Api(config.new_client_from_config(str(sa_kubeconfig(release, f"{RELEASE}-webhook"))))
    assert webhook_core.read_namespace(NAMESPACE).metadata.name == NAMESPACE
    for forbidden in (lambda: webhook_core.list_namespace(),
                      lambda: webhook_core.patch_namespace(NAMESPACE, {"metadata": {"labels": {"jovial-guard.io/mode": "off"}}}),
                      lambda: webhook_core.list_pod_for_all_namespaces()):
        with pytest.raises(client.ApiException) as err:
            forbidden()
        assert err.value.status == 403


async def test_the_webhook_with_engine_wasm_follows_the_bundle_service(release: SimpleNamespace) -> None:
    """The chart's webhook container with ``webhook.engine=wasm`` (the same values plus that
    one), run with its own arguments and key: it fetches the published bundle from the bundle
    service, verifies it with the chart's key and answers as the chart's OPA does, revision
    included. Only addresses and paths change."""
    import socket
    import ssl

    from jovial_guard.admission.handler import AdmissionHandler
    from jovial_guard.admission.tls import write_webhook_certs
    from jovial_guard.policy.client import OpaConnection, OpaEndpoint
    from jovial_guard.policy.engine import PolicyEngine
    from tests.admission.jg_chart import template

    from .test_webhook_wasm import CASES

    docs = template("--set", "policy.bundles.enabled=true", "--set-file", f"policy.publicKey={release.store.key.public_path}",
                    "--set", f"policy.keyId={release.store.key.key_id}", "--set", "namespaceModes.enabled=true",
                    "--set", "webhook.engine=wasm")
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-webhook")
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-webhook")
    work = release.work / "webhook-wasm"
    work.mkdir()
    (work / "bundle-key.pem").write_text(configmap["data"]["bundle-key.pem"])
    certs = write_webhook_certs(work / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    port = free_loopback_port()
    service = f"http://{RELEASE}-bundles.{NAMESPACE}.svc:8282"
    args = [a.replace(service, release.bundle_url).replace("/bundle-key/", f"{work}/")
            .replace("/tls/tls.crt", str(certs.cert)).replace("/tls/tls.key", str(certs.key)).replace("--port=8443", f"--port={port}")
            for a in container["args"]]
    assert f"--bundle={release.bundle_url}/bundles/jovial_guard.tar.gz" in args
    assert not any(a.startswith("--opa") for a in args)  # no OPA in the pod to ask
    kubeconfig = sa_kubeconfig(release, f"{RELEASE}-webhook")
    proc = start([sys.executable, "-m", "jovial_guard", *container["command"][1:], *args, "--host=127.0.0.1",
                  f"--kubeconfig={kubeconfig}", "--log-format=text"], work / "webhook.log")
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    base = f"https://127.0.0.1:{port}"

    def ready() -> str:
        try:
            with urllib.request.urlopen(f"{base}/readyz", context=ctx, timeout=3) as resp:
                return resp.read().decode() if resp.status == 200 else ""
        except OSError:
            assert proc.poll() is None, (work / "webhook.log").read_text()[-2000:]
            return ""

    try:
        current = release.store.current()
        wait_until(lambda: current in ready(), "the wasm webhook serving the published revision", timeout=60)
        # Its workers report what they decide with to the bundle service, as HOST/PID.
        from jovial_guard.policy.replicas import replica_states

        states = await replica_states(release.bundle_url)
        workers = [s for s in states if s["id"].startswith(f"{socket.gethostname()}/")]
        assert workers and all(s["revision"] == current and not s["error"] for s in workers), states
        async with OpaConnection(OpaEndpoint(release.opa_url, token=release.token)) as opa:
            handler = AdmissionHandler(PolicyEngine(opa))
            for review in CASES[:12]:
                review = json.loads(json.dumps(review))
                review["request"]["namespace"] = NAMESPACE  # a namespace whose labels the webhook may read
                request = urllib.request.Request(f"{base}/mutate", data=json.dumps(review).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, context=ctx, timeout=5) as resp:
                    ours = json.loads(resp.read())["response"]
                by_opa = (await handler.handle(json.dumps(review).encode(), mode="mutate")).body["response"]
                assert ours["auditAnnotations"]["policy-revision"] == current
                assert (ours["allowed"], ours.get("status"), ours.get("patch")) == \
                    (by_opa["allowed"], by_opa.get("status"), by_opa.get("patch"))
    finally:
        stop_group(proc)
