"""Signed policy bundles reach every webhook replica, on a real kube-apiserver.

No kubelet here: the two webhook replicas, their OPAs and the bundle service run as host
processes, as their containers would. The API server calls replica 1; both OPAs poll the
bundle service, which serves the ConfigMap that ``jovial-guard policy deploy --kubeconfig
--configmap`` publishes. A deploy (a rule moved to warn mode) and a rollback change the
decision on both replicas without restarting anything; a tampered bundle in the ConfigMap
is refused by OPA itself and nothing changes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.admission.tls import CertPaths, write_webhook_certs
from jovial_guard.policy.bundles import opa_bundle_config
from jovial_guard.policy.opa_process import (
    DEFAULT_POLICY_DIR,
    ManagedOpa,
    free_loopback_port,
)
from jovial_guard.policy.publish import ConfigMapBundle
from jovial_guard.policy.store import PolicyStore
from jovial_guard.processes import stop_group

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from .test_apiserver_e2e import webhook_configurations  # noqa: E402

NS = "jhub"
CONFIGMAP = f"{NS}/jovial-guard-policy"
LATEST_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "latest"},
              "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:latest"}]}}


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def stop(self) -> None:
        stop_group(self.proc, grace=10)


def wait_until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001 - poll until it holds
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Replica:
    def __init__(self, opa: ManagedOpa, webhook: Proc, port: int, ctx: ssl.SSLContext) -> None:
        self.opa, self.webhook, self.port, self.ctx = opa, webhook, port, ctx

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=self.ctx, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def serves(self, revision: str) -> bool:
        status, text = self.get("/readyz")
        return status == 200 and revision in text


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bundles")
    procs: list[Proc] = []
    opas: list[ManagedOpa] = []
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as cluster:  # type: ignore[arg-type]
        try:
            api = config.new_client_from_config(str(cluster.kubeconfig))
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": NS, "labels": {"jovial-guard.io/guarded": "true"}}})
            core.create_namespaced_service_account(NS, {"metadata": {"name": "default"}})
            store = PolicyStore(tmp / "store")
            first = store.add(DEFAULT_POLICY_DIR)
            store.activate(first)
            store.record("deploy", first, previous=None, details={})
            # First install: publish the store's current revision (no replica can answer yet).
            published = subprocess.run([sys.executable, "-m", "jovial_guard", "policy", "publish", "--store", str(tmp / "store"),
                                        "--kubeconfig", str(cluster.kubeconfig), "--configmap", CONFIGMAP],
                                       capture_output=True, text=True, timeout=60)
            assert published.returncode == 0 and f"published {first}" in published.stdout, published.stderr
            bundle_port = free_loopback_port()
            procs.append(Proc([sys.executable, "-m", "jovial_guard", "policy", "serve-bundles", "--configmap", CONFIGMAP,
                               "--kubeconfig", str(cluster.kubeconfig), "--host", "127.0.0.1", "--port", str(bundle_port),
                               "--interval", "0.3"], tmp / "bundle-service.log"))
            certs: CertPaths = write_webhook_certs(tmp / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
            ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
            replicas = []
            for i in range(2):
                opa = ManagedOpa(None, config=opa_bundle_config(service_url=f"http://127.0.0.1:{bundle_port}", key=store.key, report_status=True),
                                 log_path=tmp / f"opa-{i}.log").start()
                opas.append(opa)
                port = free_loopback_port()
                hook = Proc([sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", opa.url, "--cert", str(certs.cert),
                             "--key", str(certs.key), "--host", "127.0.0.1", "--port", str(port), "--revision-interval", "0.3",
                             "--namespace-labels", "--namespace-labels-ttl", "1", "--kubeconfig", str(cluster.kubeconfig)],
                            tmp / f"webhook-{i}.log")
                procs.append(hook)
                replicas.append(Replica(opa, hook, port, ctx))
            for r in replicas:
                wait_until(lambda r=r: r.serves(first), "replica ready on the first revision")
            reg = client.AdmissionregistrationV1Api(api)
            mutating, validating = webhook_configurations(replicas[0].port, certs.ca_cert)
            reg.create_mutating_webhook_configuration(mutating)
            reg.create_validating_webhook_configuration(validating)
            wait_until(lambda: "images/latest" in denial(core), "the API server calling the webhook", timeout=60)
            yield {"cluster": cluster, "core": core, "store": store, "replicas": replicas, "first": first, "tmp": tmp,
                   "bundle_url": f"http://127.0.0.1:{bundle_port}"}
        finally:
            for p in procs:
                p.stop()
            for o in opas:
                o.stop()


def denial(core: client.CoreV1Api) -> str:
    """The API server's refusal of the :latest pod (dry run), or "" when admitted."""
    try:
        core.create_namespaced_pod(NS, LATEST_POD, dry_run="All")
    except ApiException as exc:
        return str(json.loads(exc.body).get("message", ""))
    return ""


def admitted_with_warning(core: client.CoreV1Api) -> str:
    _, status, headers = core.create_namespaced_pod_with_http_info(NS, LATEST_POD, dry_run="All")
    assert status == 201
    return str(headers.get("Warning", ""))


def cli(env: dict[str, Any], *args: str, through_bundle_service: bool = False) -> subprocess.CompletedProcess[str]:
    # Either each replica's OPA directly, or (as from outside a cluster) the replicas'
    # status reports collected by the bundle service.
    urls = (["--bundle-url", env["bundle_url"], "--replicas", "2", "--probe-namespace", NS] if through_bundle_service
            else [a for r in env["replicas"] for a in ("--replica-opa-url", r.opa.url)])
    return subprocess.run(
        [sys.executable, "-m", "jovial_guard", "policy", *args, "--store", str(env["tmp"] / "store"),
         "--kubeconfig", str(env["cluster"].kubeconfig), "--configmap", CONFIGMAP, *urls],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JOVIAL_GUARD_DECISION_LOG": str(env["tmp"] / "decisions.jsonl")},
    )


def test_deploy_rollback_and_tampered_bundle_on_every_replica(env: dict[str, Any]) -> None:
    core, replicas, first = env["core"], env["replicas"], env["first"]
    assert "[images/latest]" in denial(core)

    # A candidate moving images/latest to warn mode, deployed to the cluster.
    candidate = env["tmp"] / "candidate"
    shutil.copytree(DEFAULT_POLICY_DIR, candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["settings"]["enforcement"]["modes"] = {"images/latest": "warn"}
    (candidate / "data.json").write_text(json.dumps(data, indent=2))
    done = cli(env, "deploy", str(candidate), through_bundle_service=True)
    assert done.returncode == 0, done.stdout + done.stderr
    second = env["store"].current()
    assert second != first and f"deployed {second}" in done.stdout
    print(done.stdout.strip().splitlines()[-1])  # how long the replicas took to switch
    for r in replicas:  # every replica, no restart (the webhook polls its OPA every 0.3 s)
        wait_until(lambda r=r: r.serves(second), "replica on the deployed revision", timeout=5)
        assert r.webhook.proc.poll() is None
        assert f'jovial_guard_policy_revision_info{{revision="{second}"}} 1.0' in r.get("/metrics")[1]
    assert "[images/latest]" in admitted_with_warning(core)
    with urllib.request.urlopen(f"{env['bundle_url']}/replicas", timeout=3) as resp:
        reported = json.loads(resp.read())
    assert len(reported) == 2 and {r["revision"] for r in reported} == {second}

    # Roll back: the denial is back on both replicas.
    back = cli(env, "rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    for r in replicas:
        wait_until(lambda r=r: r.serves(first), "replica back on the first revision", timeout=15)
    assert "[images/latest]" in denial(core)

    # Tamper with the published bundle (allow :latest, keep the signature file): every OPA
    # refuses it itself, keeps the active revision, and the decision does not change.
    target = ConfigMapBundle(NS, "jovial-guard-policy", kubeconfig=str(env["cluster"].kubeconfig))
    revision, payload = target.read()  # type: ignore[misc]
    seen = {id(r): r.opa.log_path.stat().st_size for r in replicas}  # type: ignore[union-attr]
    target.publish(revision, tampered(payload))

    def refused(r: Replica) -> bool:
        text = r.opa.log_path.read_bytes()[seen[id(r)]:].decode(errors="replace")  # type: ignore[union-attr]
        return "Bundle load failed" in text and "digest mismatch" in text  # the signed digests no longer match

    for r in replicas:
        wait_until(lambda r=r: refused(r), "OPA refusing the tampered bundle")
    time.sleep(1.0)
    for r in replicas:
        assert r.serves(first)
    with urllib.request.urlopen(f"{env['bundle_url']}/replicas", timeout=3) as resp:
        reported = json.loads(resp.read())
    # Each OPA told the bundle service it refused the bundle and still serves the first revision.
    assert {r["revision"] for r in reported} == {first} and all(r["error"] for r in reported), reported
    assert "[images/latest]" in denial(core)


def tampered(payload: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    data = json.loads(members["/data.json"])
    data["settings"]["images"]["allow_latest"] = True
    members["/data.json"] = json.dumps(data).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    assert base64.b64encode(out.getvalue()) != base64.b64encode(payload)
    return out.getvalue()


def test_namespace_mode_label_through_the_api_server(env: dict[str, Any]) -> None:
    """The webhook reads the namespace's mode label through the API server (TTL 1 s)."""
    core = env["core"]
    assert "[images/latest]" in denial(core)
    label = "mode.jovial-guard.io/images.latest"
    core.patch_namespace(NS, {"metadata": {"labels": {label: "warn"}}})
    try:
        warning = wait_until(lambda: not denial(core) and admitted_with_warning(core), "the namespace label taking effect", timeout=15)
        assert "[images/latest]" in warning
    finally:
        core.patch_namespace(NS, {"metadata": {"labels": {label: None}}})
    wait_until(lambda: "[images/latest]" in denial(core), "the label's removal taking effect", timeout=15)


def test_open_policy_is_rolled_back_by_the_api_server_probe(env: dict[str, Any]) -> None:
    """A candidate that passes its own (edited) tests but admits privileged pods: the dry-run
    probe through the API server catches it and every replica is put back."""
    core, replicas, store = env["core"], env["replicas"], env["store"]
    before = store.current()
    opened = env["tmp"] / "opened"
    shutil.copytree(DEFAULT_POLICY_DIR, opened)
    main = (opened / "main.rego").read_text()
    (opened / "main.rego").write_text(main.replace("(pod_security.violation | images.violation)", "images.violation"))
    tests = (opened / "main_test.rego").read_text()
    start, end = tests.index("test_dangerous_pod_denied_with_reasons"), tests.index("test_revision_from_data")
    (opened / "main_test.rego").write_text(tests[:start] + tests[end:])
    done = cli(env, "deploy", str(opened), "--min-coverage", "0", through_bundle_service=True)
    assert done.returncode == 1, done.stdout + done.stderr
    # The open policy admits it, and only the API server's own validation (privileged with
    # the patch's allowPrivilegeEscalation: false) stops it: not the policy, so a problem.
    assert "known-bad privileged pod was refused, but not by the policy" in done.stderr
    assert f"rolled back to {before}" in done.stderr
    assert store.current() == before and store.history()[-1].action == "auto-rollback"
    for r in replicas:
        wait_until(lambda r=r: r.serves(before), "replica back on the previous revision", timeout=15)
    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
                  "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27",
                                           "securityContext": {"privileged": True}}]}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(NS, privileged, dry_run="All")
    assert "[pod-security/privileged]" in json.loads(refused.value.body)["message"]
