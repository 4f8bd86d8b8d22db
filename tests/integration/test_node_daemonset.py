"""The node agent as the DaemonSet users install, in a pod on the real node.

The committed manifests (``deploy/node-agent/``) are applied with server-side apply, changed
only where this node differs (``node_daemonset.for_this_node``), from the node agent's own
image (``images/node-agent/``, imported into the node's containerd). First the profiles-only
DaemonSet: it installs the profiles resolved for the node's architecture and labels the node
(and by its user-namespace support); its pod is Ready only once that is done, which the
readiness probe (``jovial-guard node-ready``, an exec probe) checks.
Then the isolation DaemonSet replaces it, as its header says to: privileged, host network and
PIDs, the kubelet's seccomp directory, the CNI plugin hand-off socket, grants and attestation.
The rest is what the host-process agent shows in test_node_isolation.py, now done by the pod:
a notebook created through the webhook gets its egress rules (the allowlisted archive
reachable, the metadata stand-in refused), a delivered grant appears in the running notebook,
the pod is attested, and without the agent new notebooks stay Pending with the plugin's error.
Last, an agent whose hand-off socket is gone turns not Ready, saying why.

What this node lacks and a systemd node has is prepared here: the staging and fileset
directories are shared mounts (systemd makes ``/`` shared).
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from kubernetes import client, config

from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.node import grant_channel as channel
from jovial_guard.node.cni_plugin import PLUGIN_TYPE
from jovial_guard.node import userns
from jovial_guard.node.labels import READY_LABEL
from jovial_guard.hardening.seccomp_oci import ARCH_TO_SCMP, node_architecture
from jovial_guard.node.profiles import default_source_dir, load_profiles
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

from . import node_daemonset as ds
from .node_cluster import NODE_NAME, NodeCluster, free_port
from .node_images import import_into, node_agent_image
from .node_isolation_pods import (allow_hub, as_hub, create_pod, deliver_grant, grant_status, look, notebook_pod, policy_copy,
                                  until, wait_finished, wait_running)
from .node_redteam import NETPROBE
from .node_testhosts import METADATA, TestHosts
from .node_tools import tool
from .node_webhook import registered_webhook

NS = "jhub"
PROFILES_ONLY = ("namespace.yaml", "rbac.yaml", "daemonset.yaml")
ISOLATION = ("namespace.yaml", "rbac.yaml", "isolation/rbac.yaml", "isolation/daemonset.yaml")


class Node:
    """The cluster, its test hosts, the issuer and how this node fills in the manifests."""

    def __init__(self, cluster: NodeCluster, hosts: TestHosts, image: str, hub_port: int,
                 api: ds.ApiForwarder) -> None:
        self.cluster, self.hosts, self.image, self.hub_port, self.api = cluster, hosts, image, hub_port, api
        self.core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
        self.hub = as_hub(cluster)
        self.issuer = Issuer.from_directory(cluster.dir / "issuer" / "state", create=True)
        self.applied: list[dict[str, Any]] = []

    @property
    def staging(self) -> Path:
        return self.cluster.dir / "staging"

    @property
    def socket_dir(self) -> Path:
        return self.cluster.dir / "agent"

    @property
    def conflist(self) -> Path:
        return self.cluster.dir / "cni" / "net.d" / "10-jg-pods.conflist"

    def docs(self, names: tuple[str, ...], **changes: Any) -> list[dict[str, Any]]:
        d = self.cluster.dir
        host_paths = {"kubelet-seccomp": self.cluster.seccomp_dir(), "state": d / "agent-state", "staging": self.staging,
                      "filesets": d / "lustre", "run": self.socket_dir, "cni-bin": self.cluster.cni_bin_dir,
                      "cni-conf": self.conflist.parent}
        args = {"--cni-socket": str(self.socket_dir / "egress.sock"),
                "--cni-conflist": f"/host/etc/cni/net.d/{self.conflist.name}",
                "--hub-address": f"{self.cluster.network.host_pod_ip}/32", "--hub-port": str(self.hub_port)}
        docs = ds.manifests(*names)
        in_use = {v["name"] for doc in docs if doc["kind"] == "DaemonSet" for v in doc["spec"]["template"]["spec"]["volumes"]}
        present = {a.partition("=")[0] for doc in docs if doc["kind"] == "DaemonSet"
                   for a in doc["spec"]["template"]["spec"]["containers"][0].get("args", [])}
        # No kube-proxy here: the forwarder on the host's pod-bridge address stands in for it.
        env = {"KUBERNETES_SERVICE_HOST": self.cluster.network.host_pod_ip, "KUBERNETES_SERVICE_PORT": str(self.api.port)}
        return ds.for_this_node(docs, image=self.image, host_paths={k: v for k, v in host_paths.items() if k in in_use},
                                same_path_inside=("run",), args={k: v for k, v in args.items() if k in present},
                                env=env, **changes)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        ds.apply(self.core.api_client, docs)
        self.applied += [d for d in docs if d not in self.applied]

    def agent_log(self) -> str:
        return ds.agent_log(self.cluster, "*")

    def until(self, what: str, check: Any, *, timeout: float = 30) -> Any:
        """``until``, with the agent's output in the failure."""
        try:
            return until(what, check, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{self.agent_log()[-4000:]}") from None


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    started = time.monotonic()
    image, archive = node_agent_image()
    print(f"node agent image as a docker-archive: {time.monotonic() - started:.1f} s", file=sys.stderr)
    cluster = NodeCluster(preinstall_profiles=False, pod_routes=lambda net: TestHosts(net, Path()).routes())
    hosts = TestHosts(cluster.network, cluster.dir / "testhosts")
    listener = socket.socket()
    api: ds.ApiForwarder | None = None
    try:
        with cluster:
            hosts.create()
            cluster.timed("node agent image into containerd", lambda: import_into(tool("ctr"), str(cluster.socket), archive))
            hub_port = free_port(cluster.network.host_pod_ip)
            listener.bind((cluster.network.host_pod_ip, hub_port))
            listener.listen(64)
            api = ds.ApiForwarder(cluster.network.host_pod_ip, cluster.control.port)
            shared = Node(cluster, hosts, image, hub_port, api)
            for path in (shared.staging, cluster.dir / "lustre"):
                mounts.make_own_mount(path, flag=mounts.MS_SHARED)
            for user in ("alice", "bob"):
                (cluster.dir / "lustre" / "home" / user).mkdir(parents=True)
                (cluster.dir / "lustre" / "home" / user / "marker").write_text(f"{user}'s file\n")
            cluster.make_namespace(shared.core, NS, {"jovial-guard.io/guarded": "true"})
            allow_hub(shared.core, NS)
            policy_copy(DEFAULT_POLICY_DIR, cluster.dir / "policies", staging_root=shared.staging,
                        archive=hosts.address("archive"))
            try:
                yield shared
            finally:
                # The DaemonSet first, or its controller recreates the pod the teardown deletes.
                ds.delete(shared.core.api_client, shared.applied)
                until("the agent pods gone", lambda: not ds.agent_pods(shared.core), timeout=90)
                hosts.remove()
    finally:
        listener.close()
        if api is not None:
            api.close()
        hosts.remove()
    cluster.fail_on_leftovers()


def test_profiles_only_daemonset_installs_the_resolved_profile_and_labels_the_node(node: Node) -> None:
    node.apply(node.docs(PROFILES_ONLY))
    pod = ds.wait_rolled_out(node.core, node=node.cluster)
    # Ready implies the label and the profile: read at once, no waiting.
    labelled = node.cluster.get_object("node", NODE_NAME) or {}
    assert labelled["metadata"]["labels"].get(READY_LABEL) == "true", labelled["metadata"]
    installed = (node.cluster.seccomp_dir() / "jovial-guard" / "notebook.json").read_bytes()
    assert installed == load_profiles(default_source_dir())["notebook.json"]
    resolved = json.loads(installed)
    committed = json.loads((default_source_dir() / "notebook.json").read_text())
    # Resolved: this node's architecture first, no archMap, no per-architecture conditions.
    assert "archMap" not in resolved and resolved["architectures"][0] == ARCH_TO_SCMP[node_architecture()], resolved
    assert not any("includes" in r or "excludes" in r for r in resolved["syscalls"])
    assert "archMap" in committed or any("includes" in r for r in committed["syscalls"])
    container = pod.spec.containers[0]
    assert (container.security_context.capabilities.drop, pod.spec.host_pid, pod.spec.host_network) == (["ALL"], None, None)
    assert container.readiness_probe._exec.command[:2] == ["jovial-guard", "node-ready"]
    # This node's containerd runs Debian's runc 1.1.5: the kubelet reports no user-namespace
    # support for the default handler, and the agent labels the node accordingly.
    assert [h for h in labelled["status"]["runtimeHandlers"] if h["name"] == ""] == [
        {"name": "", "features": {"recursiveReadOnlyMounts": True, "userNamespaces": False}}]
    assert labelled["metadata"]["labels"].get(userns.LABEL) == "false"
    assert labelled["metadata"]["annotations"][userns.REASON_ANNOTATION].startswith(
        "the default runtime handler does not report userNamespaces")
    assert f"user namespaces: {userns.LABEL}=false" in node.agent_log()


@pytest.fixture(scope="module")
def isolation(node: Node) -> Any:
    """The isolation DaemonSet applied over the profiles-only one; its running pod."""
    d = node.cluster.dir
    node.core.create_namespaced_config_map(ds.NAMESPACE, {
        "metadata": {"name": "jovial-guard-issuer"},
        "data": {"issuer-signing.pub": (d / "issuer" / "keys" / "issuer-signing.pub").read_text()}})
    node.core.create_namespaced_config_map(ds.NAMESPACE, {
        "metadata": {"name": "jovial-guard-node-policy"}, "data": {"data.json": (d / "policies" / "data.json").read_text()}})
    node.apply(node.docs(ISOLATION))
    pod = ds.wait_rolled_out(node.core, node=node.cluster)
    node.until("the grant key published", lambda: (node.cluster.get_object("node", NODE_NAME) or {}).get("metadata", {})
          .get("annotations", {}).get(channel.KEY_ANNOTATION), timeout=60)
    node.until("the agent chained its plugin after the bridge", lambda: [
        p["type"] for p in json.loads(node.conflist.read_text())["plugins"]] == ["bridge", PLUGIN_TYPE], timeout=60)
    time.sleep(2)  # containerd reloads a changed conflist by itself
    return pod


def test_isolation_daemonset_replaces_it_in_a_privileged_host_pod(node: Node, isolation: Any) -> None:
    spec = isolation.spec
    assert (spec.host_pid, spec.host_network, spec.containers[0].security_context.privileged) == (True, True, True)
    assert spec.containers[0].image == node.image
    assert (node.cluster.cni_bin_dir / PLUGIN_TYPE).is_file()
    assert (node.socket_dir / "egress.sock").is_socket()
    assert "egress: serving the CNI plugin on" in node.agent_log()


@pytest.fixture(scope="module")
def webhook(node: Node, isolation: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registered_webhook(node.core.api_client, tmp_path_factory.mktemp("ds-webhook"),
                            policy_dir=node.cluster.dir / "policies") as opa_url:
        yield opa_url


@pytest.fixture(scope="module")
def alice(node: Node, webhook: str) -> str:
    """alice's notebook (group astro) through the webhook, running; its pod IP."""
    stored = create_pod(node.hub, notebook_pod("alice", "jupyter-alice", groups=("astro",)))
    assert stored["spec"]["nodeSelector"] == {READY_LABEL: "true"}
    address = wait_running(node.core, "jupyter-alice", NS)
    assert "egress rules loaded for jhub/jupyter-alice (groups: astro)" in node.agent_log(), node.agent_log()[-3000:]
    return address


def test_in_pod_agent_loads_the_notebooks_egress(node: Node, alice: str) -> None:
    targets = {"archive": [node.hosts.address("archive"), 80], "other": [node.hosts.address("other"), 80],
               "metadata": [METADATA, 80]}
    create_pod(node.hub, notebook_pod("alice", "jupyter-alice-probe", groups=("astro",), command=["python", "-c", NETPROBE],
                                  env={"JG_TARGETS": json.dumps(targets)}))
    net = wait_finished(node.core, "jupyter-alice-probe", NS)["net"]
    assert net == {"archive": 0, "other": errno.EHOSTUNREACH, "metadata": errno.EHOSTUNREACH}, net


def test_grant_delivered_to_the_in_pod_agent_reaches_the_notebook(node: Node, alice: str) -> None:
    assert look(alice)["home"] == errno.ENOENT
    serial = deliver_grant(node.core, node.issuer, "alice", node=NODE_NAME, namespace=ds.NAMESPACE)
    node.until("alice's grant mounted", lambda: grant_status(node.core, serial, ds.NAMESPACE)
          .startswith("mounted home/alice (rw) for alice"), timeout=60)
    seen = until("alice's file in her running pod", lambda: (lambda s: s if s["marker"] == "alice's file" else None)(
        look(alice)))
    assert seen["home"] == ["marker"]
    assert channel.withdraw_grant(node.core.api_client, namespace=ds.NAMESPACE, serial=serial)
    until("alice's fileset gone from her pod", lambda: look(alice)["home"] == [], timeout=30)


def test_in_pod_agent_attests_the_notebook(node: Node, alice: str) -> None:
    ok = node.until("a clean attestation of jupyter-alice", lambda: [
        e for e in ds.attestations(node.agent_log()) if e["pod"] == "jupyter-alice" and e["rule"] == "attestation ok"],
        timeout=60)
    assert ok[-1]["user"] == "alice"


def test_without_the_agent_pod_new_notebooks_wait_until_it_is_back(node: Node, alice: str) -> None:
    """Fail closed: the DaemonSet held off the node (a node selector no node has), its pod
    gone, a new notebook waits with the plugin's error; the DaemonSet back, it starts."""
    before = {p.metadata.uid for p in ds.agent_pods(node.core)}
    paused = node.docs(ISOLATION)
    for doc in paused:
        if doc["kind"] == "DaemonSet":
            doc["spec"]["template"]["spec"]["nodeSelector"] = {"jovial-guard.io/paused": "true"}
    node.apply(paused)
    until("the agent pod gone", lambda: not ds.agent_pods(node.core), timeout=90)
    create_pod(node.hub, notebook_pod("bob", "jupyter-bob"))
    events = node.until("FailedCreatePodSandBox naming the plugin", lambda: [
        e.message for e in node.core.list_namespaced_event(NS, field_selector="involvedObject.name=jupyter-bob").items
        if e.reason == "FailedCreatePodSandBox" and PLUGIN_TYPE in (e.message or "")], timeout=90)
    assert "the pod does not start without them" in events[0], events
    assert node.core.read_namespaced_pod("jupyter-bob", NS).status.phase == "Pending"
    node.apply(node.docs(ISOLATION))
    back = ds.wait_rolled_out(node.core, node=node.cluster)
    assert back.metadata.uid not in before
    wait_running(node.core, "jupyter-bob", NS, timeout=180)
    # Deleting the pod itself: the DaemonSet makes a new one, which serves the plugin again.
    node.core.delete_namespaced_pod(back.metadata.name, ds.NAMESPACE)
    until("a new agent pod", lambda: [p for p in ds.agent_pods(node.core) if p.metadata.uid != back.metadata.uid],
          timeout=90)
    ds.wait_rolled_out(node.core, node=node.cluster)
    create_pod(node.hub, notebook_pod("bob", "jupyter-bob-2"))
    wait_running(node.core, "jupyter-bob-2", NS, timeout=180)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_an_agent_whose_socket_is_gone_turns_not_ready_and_says_why(node: Node, isolation: Any) -> None:
    """The readiness probe pings the CNI hand-off socket: with the socket removed from the
    node, the running agent's pod turns not Ready and the probe's event names the socket.
    Deleting the pod brings a new agent that serves it again."""
    (pod,) = [p for p in ds.agent_pods(node.core) if p.metadata.deletion_timestamp is None]
    assert ready(pod)
    sock = node.socket_dir / "egress.sock"
    sock.unlink()
    node.until("the agent pod not Ready", lambda: not ready(node.core.read_namespaced_pod(pod.metadata.name, ds.NAMESPACE)),
               timeout=60)
    messages = node.until("the probe's event", lambda: [
        e.message for e in node.core.list_namespaced_event(
            ds.NAMESPACE, field_selector=f"involvedObject.name={pod.metadata.name}").items
        if e.reason == "Unhealthy" and "node agent not ready" in (e.message or "")], timeout=30)
    assert f"node agent not ready: the CNI hand-off socket {sock} does not answer ([Errno 2] No such file or directory)" \
        in messages[-1], messages
    node.core.delete_namespaced_pod(pod.metadata.name, ds.NAMESPACE)
    until("a new agent pod", lambda: [p for p in ds.agent_pods(node.core) if p.metadata.uid != pod.metadata.uid],
          timeout=90)
    ds.wait_rolled_out(node.core, node=node.cluster)
    assert sock.is_socket()
