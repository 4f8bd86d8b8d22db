"""The project's Helm chart installed into the single-node cluster, its webhook running as a pod.

Installed as deploy/install.sh installs it: the webhook's namespace under Pod Security
"restricted", the hub's namespace labelled ``jovial-guard.io/guarded=true``, the hub identity
from policies/data.json, ``helm upgrade --install --wait``. The webhook image is the project's
own build (scripts/test.d/70-webhook-image.sh), imported into containerd without a registry
and named by its build key.

Three settings differ from a production cluster, because this node has no kube-proxy and no
cluster DNS, and one node on two cores:

* the API server reaches the webhook's Service through its endpoints, i.e. straight at the
  pod's IP on the pod bridge: kube-apiserver runs with ``--enable-aggregator-routing=true``
  (:data:`APISERVER_ARGS`), which routes admission webhooks the same way;
* the install gate Job would call the Service by its DNS name, which nothing resolves here:
  ``installGate.enabled=false``, and ``--wait`` takes its place (Helm creates the post-install
  hooks, the fail-closed webhook configurations, only once the Deployment is ready);
* one replica instead of two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jovial_guard.policy.opa_process import REPO_ROOT
from tests.admission.jg_chart import CHART, helm

from .node_cluster import NodeCluster
from .node_images import import_into, webhook_image
from .node_tools import tool

APISERVER_ARGS = ("--enable-aggregator-routing=true",)
RELEASE = "jovial-guard"
WEBHOOK_NAMESPACE = "jovial-guard"
GUARDED = "jovial-guard.io/guarded"


@dataclass
class Release:
    image: str
    values: Path
    helm_env: dict[str, str]
    #: Seconds: image import into containerd; ``helm install --wait`` until the webhook pod is
    #: ready; then until the API server calls the webhook.
    import_seconds: float
    install_seconds: float
    serving_seconds: float


def hub_identity() -> tuple[str, str]:
    """(namespace, service account) the policy trusts as the hub, from policies/data.json."""
    hub = json.loads((REPO_ROOT / "policies" / "data.json").read_text())["settings"]["hub"]
    return hub["namespace"], hub["service_account"]


def egress_with_hub(hub_ip: str, hub_port: int) -> dict[str, Any]:
    """policies/data.json's egress settings, with the hub's API (and nothing else of the
    host) allowed: the notebook reaches the hub at exactly this address and port."""
    egress: dict[str, Any] = json.loads((REPO_ROOT / "policies" / "data.json").read_text())["settings"]["egress"]
    egress["hub"] = [{"cidr": f"{hub_ip}/32", "ports": [hub_port], "protocol": "tcp", "comment": "hub API"}]
    return egress


def notebook_netpols(work: Path, egress: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The notebook NetworkPolicies for these egress settings, as the chart asks for them
    (``jovial-guard webhook netpol``); kept for clusters whose CNI enforces them."""
    data = json.loads((REPO_ROOT / "policies" / "data.json").read_text())
    data["settings"]["egress"] = egress
    (work / "policy-data.json").write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "jovial_guard", "webhook", "netpol", "--data", str(work / "policy-data.json"),
                           "--namespace", namespace], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"jovial-guard webhook netpol failed: {proc.stderr.strip()[-1500:]}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def api(node: NodeCluster, method: str, path: str, body: dict[str, Any] | None = None,
         *, query: str = "") -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(node.control.url + path + query, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=node.control.ssl_context(), timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def create_namespaces(node: NodeCluster) -> None:
    hub_ns, _ = hub_identity()
    for name, labels in ((WEBHOOK_NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"}),
                         (hub_ns, {GUARDED: "true"})):
        status, body = api(node, "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})
        if status not in (201, 409):
            raise RuntimeError(f"creating namespace {name} failed ({status}): {body.get('message')}")


def wait_until_called(node: NodeCluster, namespace: str, timeout: float = 60) -> None:
    """Until the API server calls the release's webhook: a privileged dry-run pod in the
    guarded namespace is refused with the policy's message."""
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "webhook-probe"},
             "spec": {"containers": [{"name": "c", "image": "probe", "securityContext": {"privileged": True}}]}}
    deadline = time.monotonic() + timeout
    message = ""
    while time.monotonic() < deadline:
        status, body = api(node, "POST", f"/api/v1/namespaces/{namespace}/pods", probe, query="?dryRun=All")
        message = str(body.get("message", ""))
        if status >= 400 and "jovial-guard.io" in message:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the API server never called the release's webhook (last answer: {message})")


def install(node: NodeCluster, work: Path, *, egress: dict[str, Any] | None = None,
            values: dict[str, Any] | None = None, changes: dict[str, Any] | None = None,
            timeout: str = "5m", before: Any = None) -> Release:
    """Import the webhook image, install the chart, wait until the webhook is in the path.

    ``values`` go over the ones every node install needs; ``changes`` are what this node
    lacks, applied to the rendered objects by ``node_post_render`` (Helm's post-renderer);
    ``before(image)`` runs once the image is in containerd and the namespaces exist."""
    started = time.monotonic()
    image, archive = webhook_image()
    import_into(tool("ctr"), str(node.socket), archive)
    imported = time.monotonic()
    create_namespaces(node)
    if before is not None:
        before(image)
    hub_ns, hub_sa = hub_identity()
    repository, tag = image.rsplit(":", 1)
    chosen: dict[str, Any] = {
        "hub": {"namespace": hub_ns, "serviceAccount": hub_sa},
        "image": {"name": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "replicas": 1,
        "installGate": {"enabled": False},
    }
    if egress is not None:
        chosen |= {"egress": egress, "notebookNetworkPolicies": {"manifests": notebook_netpols(work, egress, hub_ns)}}
    chosen |= values or {}
    values_file = work / "jovial-guard-values.yaml"
    values_file.write_text(yaml.safe_dump(chosen))
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig), "HELM_CACHE_HOME": str(work / "helm-cache"),
           "HELM_CONFIG_HOME": str(work / "helm-config"), "HELM_DATA_HOME": str(work / "helm-data")}
    argv = [helm(), "upgrade", "--install", RELEASE, str(CHART), "--namespace", WEBHOOK_NAMESPACE,
            "-f", str(values_file), "--wait", "--timeout", timeout]
    if changes:
        argv += post_renderer(work, changes)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    installed = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"helm install failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}\n"
                           f"pods: {webhook_pod_states(node)}\nkubelet log:\n{node.log('kubelet')[-2000:]}")
    wait_until_called(node, hub_ns)
    return Release(image=image, values=values_file, helm_env=env, import_seconds=imported - started,
                   install_seconds=installed - imported, serving_seconds=time.monotonic() - installed)


def post_renderer(work: Path, changes: dict[str, Any]) -> list[str]:
    """Helm's arguments running ``node_post_render`` with ``changes`` over the rendered objects."""
    (work / "node-changes.json").write_text(json.dumps(changes))
    script = Path(__file__).with_name("node_post_render.py")
    return ["--post-renderer", sys.executable, "--post-renderer-args", str(script),
            "--post-renderer-args", str(work / "node-changes.json")]


def uninstall(node: NodeCluster, release: Release) -> None:
    """Remove the release before the node goes: its Deployment would re-create the webhook pod
    while the node's teardown deletes pods. The pre-delete hook Job cannot reach the API server
    from a pod here (no kube-proxy), so its work, deleting the two fail-closed configurations
    Helm leaves (hook resources), is done directly."""
    proc = subprocess.run([helm(), "uninstall", RELEASE, "--namespace", WEBHOOK_NAMESPACE, "--no-hooks", "--wait",
                           "--timeout", "2m"], capture_output=True, text=True, timeout=180, env=release.helm_env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"helm uninstall failed: {proc.stderr.strip()[-1500:]}")
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        status, body = api(node, "DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/{RELEASE}")
        if status not in (200, 404):
            raise RuntimeError(f"deleting {kind}/{RELEASE} failed ({status}): {body.get('message')}")


def webhook_pods(node: NodeCluster) -> list[dict[str, Any]]:
    _, body = api(node, "GET", f"/api/v1/namespaces/{WEBHOOK_NAMESPACE}/pods")
    return list(body.get("items", []))


def webhook_pod_states(node: NodeCluster) -> list[tuple[str, str, Any]]:
    """(name, phase, container states) of the release's pods, for failure messages."""
    return [(p["metadata"]["name"], p["status"].get("phase", ""),
             [c.get("state") for c in p["status"].get("containerStatuses", [])]) for p in webhook_pods(node)]
