"""The chart in signed-bundle mode on the single-node cluster, its webhook deciding in a pod.

The documented order (README, "Deploy policy"): a policy store, ``jovial-guard policy
publish`` of its current revision into the ConfigMap, then ``helm upgrade --install`` with
``policy.bundles.enabled``, the store's public key and key id, and ``webhook.engine``. The
release's bundle service (a pod) serves the ConfigMap's bundle; the webhook pod fetches it
from the bundle Service's cluster DNS name and verifies it with the chart's key.

What this node lacks, filled in by Helm's post-renderer (``node_post_render``), nothing else:

* no cluster DNS: the webhook pod resolves the bundle Service's name by a ``hostAliases``
  entry, pointed at the host's pod-bridge address;
* no kube-proxy: a relay there (``node_daemonset.ApiForwarder``) takes the Service's port and
  passes each connection to the Service's current endpoint, as kube-proxy would; another
  passes the bundle service's own API calls to the API server, whose address it is told in
  ``KUBERNETES_SERVICE_HOST``/``PORT``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR
from jovial_guard.policy.store import PolicyStore

from .node_chart import RELEASE, WEBHOOK_NAMESPACE, Release, install, uninstall
from .node_cluster import NodeCluster
from .node_daemonset import ApiForwarder

CONFIGMAP = f"{WEBHOOK_NAMESPACE}/jovial-guard-policy"
BUNDLES = f"{RELEASE}-bundles"
BUNDLE_PORT = 8282
SERVICE_NAME = f"{BUNDLES}.{WEBHOOK_NAMESPACE}.svc"


@dataclass
class SignedRelease:
    node: NodeCluster
    release: Release
    store: PolicyStore
    revision: str
    core: client.CoreV1Api


def publish(node: NodeCluster, store: Path) -> str:
    """``jovial-guard policy publish`` of ``store``'s current revision into the release's ConfigMap."""
    proc = subprocess.run([sys.executable, "-m", "jovial_guard", "policy", "publish", "--store", str(store),
                           "--kubeconfig", str(node.kubeconfig), "--configmap", CONFIGMAP],
                          capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"jovial-guard policy publish failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc.stdout


def new_store(root: Path, policy_dir: Path = DEFAULT_POLICY_DIR) -> tuple[PolicyStore, str]:
    """A policy store (its own signing key, the default key id) with ``policy_dir`` current."""
    store = PolicyStore(root)
    revision = store.add(policy_dir)
    store.activate(revision)
    return store, revision


def policy_variant(target: Path, modes: dict[str, str]) -> Path:
    """The committed policies with ``settings.enforcement.modes`` set to ``modes``."""
    shutil.copytree(DEFAULT_POLICY_DIR, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    data = json.loads((target / "data.json").read_text())
    data["settings"]["enforcement"]["modes"] = modes
    (target / "data.json").write_text(json.dumps(data, indent=1))
    return target


def service_endpoint(core: client.CoreV1Api, name: str, port: int) -> tuple[str, int] | None:
    """A ready address of Service ``name`` (kube-proxy's choice, made per connection)."""
    try:
        endpoints = core.read_namespaced_endpoints(name, WEBHOOK_NAMESPACE)
    except client.exceptions.ApiException:
        return None
    for subset in endpoints.subsets or []:
        for address in subset.addresses or []:
            return str(address.ip), port
    return None


def node_changes(node: NodeCluster, api_relay: ApiForwarder) -> dict[str, Any]:
    """What ``node_post_render`` fills in (see the module's docstring)."""
    host = node.network.host_pod_ip
    return {
        f"Deployment/{RELEASE}-webhook": {"hostAliases": [{"ip": host, "hostnames": [SERVICE_NAME]}]},
        f"Deployment/{BUNDLES}": {"env": {"bundles": {"KUBERNETES_SERVICE_HOST": host,
                                                      "KUBERNETES_SERVICE_PORT": str(api_relay.port)}}},
    }


def bundle_values(store: PolicyStore, engine: str) -> dict[str, Any]:
    return {"policy": {"bundles": {"enabled": True}, "publicKey": store.key.public_pem, "keyId": store.key.key_id},
            "webhook": {"engine": engine}}


@contextlib.contextmanager
def signed_release(node: NodeCluster, work: Path, *, engine: str = "wasm") -> Iterator[SignedRelease]:
    """Store, publish, install with ``webhook.engine=engine``; uninstalled on exit."""
    store, revision = new_store(work / "store")
    core = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    host = node.network.host_pod_ip
    api_relay = ApiForwarder(host, node.control.port)
    bundle_relay = ApiForwarder(host, listen_port=BUNDLE_PORT, target=lambda: service_endpoint(core, BUNDLES, BUNDLE_PORT))
    try:
        release = install(node, work, values=bundle_values(store, engine), changes=node_changes(node, api_relay),
                          before=lambda _image: publish(node, store.root))
        try:
            yield SignedRelease(node=node, release=release, store=store, revision=revision, core=core)
        finally:
            uninstall(node, release)
    finally:
        bundle_relay.close()
        api_relay.close()


def upgrade_engine(signed: SignedRelease, engine: str, *, timeout: str = "5m") -> None:
    """``helm upgrade --reuse-values`` to ``webhook.engine=engine``, waiting for the rollout."""
    from tests.admission.jg_chart import CHART, helm

    from .node_chart import post_renderer

    work = signed.release.values.parent
    proc = subprocess.run([helm(), "upgrade", RELEASE, str(CHART), "--namespace", WEBHOOK_NAMESPACE, "--reuse-values",
                           "--set", f"webhook.engine={engine}", "--wait", "--timeout", timeout,
                           *post_renderer(work, json.loads((work / "node-changes.json").read_text()))],
                          capture_output=True, text=True, timeout=600, env=signed.release.helm_env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"helm upgrade to engine {engine} failed: {proc.stderr.strip()[-2000:]}")


def webhook_log(node: NodeCluster, container: str = "webhook") -> str:
    """The webhook pods' container output (every pod and restart) from the kubelet's log directory."""
    found = sorted((node.dir / "pod-logs").glob(f"{WEBHOOK_NAMESPACE}_{RELEASE}-webhook-*/{container}/*.log"))
    return "".join(p.read_text(errors="replace") for p in found)
