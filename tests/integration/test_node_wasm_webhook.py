"""The webhook with ``webhook.engine: wasm``, installed by Helm, deciding in a pod on the real node.

One single-node cluster (kube-apiserver, kubelet, containerd). The chart is installed in
signed-bundle mode as documented (``node_chart_bundles``): a policy store's revision published
into the ConfigMap, ``helm upgrade --install --wait`` with ``webhook.engine=wasm``. The
webhook pod, from the project's image, fetches the signed bundle from the release's bundle
service pod, verifies it with the chart's key and evaluates the compiled policy it carries in
its own workers; the API server calls it through its Service's endpoints. KubeSpawner's pod,
created as the hub, is mutated (the hardening is in the stored pod) and runs; a privileged
one is refused with the policy's message.
Fail closed: a bundle signed with another key (same key id, a relaxed policy) is refused by
the running pod, which keeps deciding with the verified revision; a new pod that finds only
that bundle never turns Ready, so the API server refuses pods in guarded namespaces, and the
pod itself denies with ``policy-engine-unavailable``. The verified revision published again,
it turns Ready. A correctly signed bundle without the compiled policy is refused as well.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from kubernetes import client

from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.policy.replicas import WORKER_STALE, replica_states, wait_replicas
from tests.admission.kubespawner_pods import admission_review

from .node_agent_run import run_agent_once
from .node_chart import APISERVER_ARGS, RELEASE, WEBHOOK_NAMESPACE, hub_identity
from .node_chart_bundles import (BUNDLE_PORT, SERVICE_NAME, SignedRelease, new_store, policy_variant, publish,
                                 signed_release, webhook_log)
from .node_cluster import NODE_NAME, NodeCluster
from .node_isolation_pods import allow_hub, as_hub, create_pod, notebook_pod, until, wait_finished

HUB_NS, _ = hub_identity()
NOTEBOOK_PROFILE = "jovial-guard/notebook.json"
#: What the notebook's own process sees of its confinement, left as its termination message.
PROBE = r"""
import json, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    open("/jg-probe", "w")
    root = 0
except OSError as exc:
    root = exc.errno
open("/dev/termination-log", "w").write(json.dumps({"uid": os.getuid(), "write_root": root,
    **{k: status[k].strip() for k in ("Seccomp", "NoNewPrivs", "CapEff")}}))
"""


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    cluster = NodeCluster(apiserver_args=APISERVER_ARGS, preinstall_profiles=False)
    with cluster:
        # The node agent installs the profiles and labels the node; notebooks select it.
        agent = run_agent_once(cluster)
        assert agent.returncode == 0, agent.stderr
        yield cluster
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def signed(node: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedRelease]:
    started = time.monotonic()
    with signed_release(node, tmp_path_factory.mktemp("wasm-chart"), engine="wasm") as release:
        print(f"\nimage import {release.release.import_seconds:.1f} s, helm install --wait "
              f"{release.release.install_seconds:.1f} s, until called {release.release.serving_seconds:.1f} s "
              f"(total {time.monotonic() - started:.1f} s)")
        until(f"the default ServiceAccount of {HUB_NS}", lambda: node.get_object("serviceaccount", "default", HUB_NS),
              timeout=60)
        allow_hub(release.core, HUB_NS)
        yield release


def webhook_pods(signed: SignedRelease) -> list[Any]:
    pods = signed.core.list_namespaced_pod(WEBHOOK_NAMESPACE, label_selector=f"app.kubernetes.io/name={RELEASE}-webhook").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def release_ca(signed: SignedRelease) -> ssl.SSLContext:
    """The release CA (the configurations' caBundle); the pod is addressed by its IP here, so
    the name check is off and the chain check on."""
    reg = client.AdmissionregistrationV1Api(signed.core.api_client)
    bundle = reg.read_mutating_webhook_configuration(RELEASE).webhooks[0].client_config.ca_bundle
    ctx = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
    ctx.check_hostname = False
    return ctx


def ask_pod(signed: SignedRelease, ip: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"https://{ip}:8443{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=release_ca(signed), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def refused(signed: SignedRelease, pod: dict[str, Any]) -> str:
    """The API server's message refusing ``pod`` (created as the hub); fails if it is created."""
    try:
        create_pod(as_hub(signed.node), pod)
    except client.exceptions.ApiException as exc:
        return str(json.loads(exc.body).get("message", exc.body))
    raise AssertionError(f"pod {pod['metadata']['name']} was created")


def hostile(name: str) -> dict[str, Any]:
    pod = notebook_pod("mallory", name)
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return pod


def test_the_wasm_webhook_pod_runs_ready_with_the_verified_bundle(signed: SignedRelease) -> None:
    (pod,) = webhook_pods(signed)
    assert pod.spec.node_name == NODE_NAME and is_ready(pod)
    (webhook,) = pod.spec.containers  # the webhook alone: no OPA in the pod
    assert webhook.name == "webhook" and webhook.image == signed.release.image
    assert "--engine=wasm" in webhook.args
    assert f"--bundle=http://{SERVICE_NAME}:8282/bundles/jovial_guard.tar.gz" in webhook.args
    status, body = ask_pod(signed, pod.status.pod_ip, "/readyz")
    assert status == 200 and signed.revision in body, body
    assert f"revision {signed.revision} installed" in webhook_log(signed.node)


def test_kubespawner_pod_is_mutated_through_the_api_server_and_runs_hardened(signed: SignedRelease) -> None:
    stored = create_pod(as_hub(signed.node), notebook_pod("alice", "jupyter-alice", command=["python", "-c", PROBE]))
    spec = stored["spec"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": NOTEBOOK_PROFILE}
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    seen = wait_finished(signed.core, "jupyter-alice", HUB_NS, timeout=180)
    assert seen == {"uid": 1000, "write_root": 30, "Seccomp": "2", "NoNewPrivs": "1", "CapEff": "0000000000000000"}, seen


def test_a_privileged_pod_is_refused_with_the_policys_message(signed: SignedRelease) -> None:
    message = refused(signed, hostile("jupyter-mallory"))
    assert "pod-security/privileged" in message and "asks to run privileged" in message, message
    assert signed.node.get_object("pod", "jupyter-mallory", HUB_NS) is None


def test_a_wrongly_signed_bundle_is_refused_and_a_webhook_without_a_verified_one_fails_closed(
        signed: SignedRelease) -> None:
    node = signed.node
    with tempfile.TemporaryDirectory(prefix="jg-forger-") as tmp:
        # Same key id, another key: a relaxed policy (privileged pods off) with a wrong signature.
        relaxed = policy_variant(Path(tmp) / "relaxed", {"pod-security/privileged": "off"})
        _forged_store, forged = new_store(Path(tmp) / "forger", relaxed)
        assert forged != signed.revision
        publish(node, Path(tmp) / "forger")
    (running,) = webhook_pods(signed)
    until("the running webhook refusing the forged bundle", lambda: "refused, keeping revision "
          f"{signed.revision}" in webhook_log(node), timeout=60)
    # It keeps deciding with the verified revision.
    assert "pod-security/privileged" in refused(signed, hostile("jupyter-mallory-2"))
    status, body = ask_pod(signed, running.status.pod_ip, "/readyz")
    assert status == 200 and signed.revision in body, body

    # A new webhook pod finds only the forged bundle: never Ready, so the API server has no
    # endpoint to call and refuses (failurePolicy Fail); asked directly, the pod denies.
    signed.core.delete_namespaced_pod(running.metadata.name, WEBHOOK_NAMESPACE, grace_period_seconds=5)
    fresh = until("a new webhook pod running", lambda: [p for p in webhook_pods(signed)
                  if p.metadata.uid != running.metadata.uid and p.status.phase == "Running" and p.status.pod_ip],
                  timeout=120)[0]
    until("the new pod refusing the forged bundle", lambda: webhook_log(node).count("refused, keeping revision (none)"),
          timeout=60)
    time.sleep(12)  # two readiness periods and then some
    (still,) = [p for p in webhook_pods(signed) if p.metadata.uid == fresh.metadata.uid]
    assert not is_ready(still), still.status.conditions
    status, body = ask_pod(signed, fresh.status.pod_ip, "/readyz")
    assert status == 503, body
    message = refused(signed, notebook_pod("bob", "jupyter-bob"))
    assert "failed calling webhook" in message, message
    review = admission_review(notebook_pod("bob", "jupyter-bob"), namespace=HUB_NS)
    status, body = ask_pod(signed, fresh.status.pod_ip, "/mutate", review)
    answer = json.loads(body)["response"]
    assert answer["allowed"] is False, answer
    assert "policy-engine-unavailable" in json.dumps(answer), answer
    print(f"\nno verified bundle: the API server said: {message}\nthe pod answered: {answer['status']}")

    # The verified revision published again: the pod installs it and turns Ready.
    publish(node, signed.store.root)
    until("the new pod Ready on the verified revision", lambda: [p for p in webhook_pods(signed)
          if p.metadata.uid == fresh.metadata.uid and is_ready(p)], timeout=90)
    assert "pod-security/privileged" in refused(signed, hostile("jupyter-mallory-3"))


def test_a_signed_bundle_without_the_compiled_policy_is_refused_by_the_workers(signed: SignedRelease) -> None:
    """Correctly signed but without ``data.jovial_guard_wasm`` (as an older version published
    it): the workers refuse it and keep deciding with the verified revision they have."""
    from unittest import mock

    node = signed.node
    with tempfile.TemporaryDirectory(prefix="jg-old-") as tmp, \
            mock.patch("jovial_guard.policy.bundles.embed_wasm", lambda staging: None):
        older = signed.store.add(policy_variant(Path(tmp) / "older", {"images/latest": "warn"}))
    signed.store.activate(older)
    try:
        publish(node, signed.store.root)
        until("the workers refusing the bundle without a compiled policy",
              lambda: "carries no compiled policy" in webhook_log(node), timeout=60)
        # A deploy waiting for the replicas hears the workers, which refused it (the pod
        # runs no OPA that could have activated it).
        bundle_service = f"http://{node.network.host_pod_ip}:{BUNDLE_PORT}"
        with pytest.raises(PolicyEngineUnavailable, match=f"fewer than 1 replicas activated {older}"):
            asyncio.run(wait_replicas(bundle_service, older, replicas=1, timeout=5))
        (pod,) = webhook_pods(signed)
        states = asyncio.run(replica_states(bundle_service))
        print(f"\nthe bundle service's replica table: {json.dumps(states, indent=1)}")
        assert all("/" in s["id"] for s in states), states
        workers = [s for s in states if s["id"].startswith(f"{pod.metadata.name}/")]
        assert len(workers) == 2 and all(s["age"] < WORKER_STALE for s in workers), states
        assert all(s["revision"] == signed.revision and "carries no compiled policy" in s["error"] for s in workers), states
        status, body = ask_pod(signed, pod.status.pod_ip, "/readyz")
        assert status == 200 and signed.revision in body and older not in body, body
        assert "pod-security/privileged" in refused(signed, hostile("jupyter-mallory-4"))
    finally:
        signed.store.activate(signed.revision)
        publish(node, signed.store.root)
