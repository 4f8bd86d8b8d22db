"""The node agent's credentials and egress on a real node, and the red team against them.

One cluster (``node_cluster``) whose CNI conflist chains ``jovial-guard-egress`` after the
bridge, test hosts on the pod bridge (an allowlisted archive, a host nobody may reach, a
metadata stand-in the pods have a route to), the project's webhook on a copy of the committed
policies (the node's staging root set, the astro group allowed to the archive), and
``jovial-guard node-agent`` as a host process with profiles, grants and the egress socket.
The hub is the test: it creates KubeSpawner's pods as the hub's service account and issues,
seals and withdraws grants with the project's issuer; the hub's API is a listener on the
host's pod-bridge address, the address the agent is told the hub has.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.backends.bind import BindBackend
from jovial_guard.credentials.delivery import seal_for_agent
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.node import grant_channel as channel
from jovial_guard.node.cni_plugin import PLUGIN_TYPE
from jovial_guard.node.labels import READY_LABEL
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

from .node_agent_run import AgentLoop
from .node_cluster import NODE_NAME, NodeCluster, free_port
from .node_isolation_pods import (allow_hub, as_hub, create_pod, deliver_grant, grant_status, look, notebook_pod, policy_copy,
                                  until, wait_finished, wait_running)
from .node_redteam import NETPROBE, REDTEAM
from .node_testhosts import METADATA, TestHosts
from .node_webhook import registered_webhook

NS, GRANTS_NS, CONTROL_NS = "jhub", "jovial-guard-node", "jg-control"


class Node:
    """Everything the module shares: the cluster, its test hosts, the agent, the issuer."""

    def __init__(self, cluster: NodeCluster, hosts: TestHosts, core: client.CoreV1Api, hub: client.ApiClient,
                 issuer: Issuer, hub_port: int) -> None:
        self.cluster, self.hosts, self.core, self.hub, self.issuer = cluster, hosts, core, hub, issuer
        self.hub_port = hub_port
        self.agent: AgentLoop | None = None

    @property
    def staging(self) -> Path:
        return self.cluster.dir / "staging"

    @property
    def conflist(self) -> Path:
        return self.cluster.dir / "cni" / "net.d" / "10-jg-pods.conflist"

    @property
    def storage(self) -> Path:
        return self.cluster.dir / "lustre"

    def agent_args(self) -> tuple[str, ...]:
        d = self.cluster.dir
        return ("--state-dir", str(d / "agent-state"), "--grants-namespace", GRANTS_NS,
                "--issuer-key", str(d / "issuer" / "keys" / "issuer-signing.pub"),
                "--storage-root", str(self.storage), "--staging-root", str(self.staging), "--grant-interval", "0.5",
                "--cni-socket", str(d / "agent" / "egress.sock"), "--cni-bin-dir", str(self.cluster.cni_bin_dir),
                "--cni-conflist", str(self.conflist), "--guarded-namespace", NS,
                "--policy-data", str(d / "policies" / "data.json"),
                "--hub-address", f"{self.cluster.network.host_pod_ip}/32", "--hub-port", str(self.hub_port))

    def start_agent(self) -> None:
        self.agent = AgentLoop(self.cluster, self.cluster.dir / "agent.log", interval=2, extra=self.agent_args())

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def deliver(self, user: str, *, lifetime: int = 3600) -> str:
        return deliver_grant(self.core, self.issuer, user, node=NODE_NAME, namespace=GRANTS_NS, lifetime=lifetime)

    def status(self, serial: str) -> str:
        return grant_status(self.core, serial, GRANTS_NS)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # The conflist holds only the bridge: the agent chains its plugin in (--cni-conflist).
    cluster = NodeCluster(preinstall_profiles=False, pod_routes=lambda net: TestHosts(net, Path()).routes())
    hosts = TestHosts(cluster.network, cluster.dir / "testhosts")
    listener = socket.socket()
    try:
        with cluster:
            hosts.create()
            hub_port = free_port(cluster.network.host_pod_ip)
            listener.bind((cluster.network.host_pod_ip, hub_port))
            listener.listen(64)
            core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
            for name, labels in ((NS, {"jovial-guard.io/guarded": "true"}), (GRANTS_NS, {}), (CONTROL_NS, {})):
                core.create_namespace({"metadata": {"name": name, "labels": labels}})
            until("default ServiceAccounts", lambda: all(
                cluster.get_object("serviceaccount", "default", n) for n in (NS, CONTROL_NS)), timeout=60)
            allow_hub(core, NS)
            issuer = Issuer.from_directory(cluster.dir / "issuer" / "state", create=True)
            policy_copy(DEFAULT_POLICY_DIR, cluster.dir / "policies", staging_root=cluster.dir / "staging",
                        archive=hosts.address("archive"))
            for user in ("alice", "bob"):
                (cluster.dir / "lustre" / "home" / user).mkdir(parents=True)
                (cluster.dir / "lustre" / "home" / user / "marker").write_text(f"{user}'s file\n")
            shared = Node(cluster, hosts, core, as_hub(cluster), issuer, hub_port)
            shared.start_agent()
            try:
                until("node labelled and grant key published", lambda: (
                    (cluster.get_object("node", NODE_NAME) or {}).get("metadata", {}).get("annotations", {})
                    .get(channel.KEY_ANNOTATION)), timeout=60)
                until("the agent chained its plugin after the bridge", lambda: [
                    p["type"] for p in json.loads(shared.conflist.read_text())["plugins"]] == ["bridge", PLUGIN_TYPE])
                time.sleep(2)  # containerd reloads a changed conflist by itself
                yield shared
            finally:
                shared.stop_agent()
                BindBackend(storage_root=shared.storage, staging_root=shared.staging,
                            work_root=cluster.dir / "agent-state" / "work").teardown()
                hosts.remove()
    finally:
        listener.close()
        hosts.remove()
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def webhook(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registered_webhook(node.core.api_client, tmp_path_factory.mktemp("iso-webhook"),
                            policy_dir=node.cluster.dir / "policies") as opa_url:
        yield opa_url


@pytest.fixture(scope="module")
def alice(node: Node, webhook: str) -> str:
    """alice's notebook (group astro), running; returns its pod IP."""
    stored = create_pod(node.hub, notebook_pod("alice", "jupyter-alice", groups=("astro",)))
    volume = next(v for v in stored["spec"]["volumes"] if v["name"] == "jg-storage")
    assert volume["hostPath"]["path"] == str(node.staging / "alice"), volume
    assert stored["metadata"]["labels"].get("egress.jovial-guard.io/astro") == "allow"
    assert stored["spec"]["nodeSelector"] == {READY_LABEL: "true"}
    # Nothing of a grant reaches the pod's spec: no Secret volume, projection or env source.
    assert not any("secret" in v or "projected" in v for v in stored["spec"]["volumes"]), stored["spec"]["volumes"]
    assert not any(e.get("valueFrom", {}).get("secretKeyRef") for c in stored["spec"]["containers"]
                   for e in c.get("env", [])) and not any(c.get("envFrom") for c in stored["spec"]["containers"])
    address = wait_running(node.core, "jupyter-alice", NS)
    assert node.agent is not None and "egress rules loaded for jhub/jupyter-alice (groups: astro)" in node.agent.output()
    return address


def test_pod_sees_its_own_fileset_and_not_another_users(node: Node, alice: str) -> None:
    assert look(alice)["home"] == errno.ENOENT  # no grant yet: the staging directory is empty
    serial, other = node.deliver("alice"), node.deliver("bob")
    until("alice's grant mounted", lambda: node.status(serial).startswith("mounted home/alice (rw) for alice"))
    until("bob's grant mounted", lambda: node.status(other).startswith("mounted home/bob"))
    seen = until("alice's file in her running pod", lambda: (lambda s: s if s["marker"] == "alice's file" else None)(look(alice)))
    assert seen["home"] == ["marker"]
    # bob's fileset is mounted on this node, under his own staging directory, never in alice's pod.
    assert mounts.is_mountpoint(node.staging / "bob" / "home")
    assert all("bob" not in line for line in seen["staged"]), seen["staged"]
    assert [line.split()[0] for line in seen["staged"]] == ["/lustre", "/lustre/home"], seen["staged"]


def test_revoking_removes_the_fileset_from_the_running_pod(node: Node, alice: str) -> None:
    serial = node.deliver("alice")
    until("mounted", lambda: node.status(serial).startswith("mounted") and look(alice)["marker"] == "alice's file")
    started = time.monotonic()
    assert channel.withdraw_grant(node.core.api_client, namespace=GRANTS_NS, serial=serial)
    until("alice's fileset gone from her pod", lambda: look(alice)["home"] == [], timeout=20)
    print(f"revocation reached the running pod in {time.monotonic() - started:.1f} s")
    # The same sealed bytes delivered again are refused: the agent remembers the withdrawal.
    channel.deliver(node.core.api_client, node.issuer, node.issuer.load(serial), node=NODE_NAME, namespace=GRANTS_NS)
    until("replayed grant refused", lambda: "revoked" in node.status(serial))
    assert look(alice)["home"] == []


def test_expiry_removes_the_fileset(node: Node, alice: str) -> None:
    serial = node.deliver("alice", lifetime=10)
    until("mounted", lambda: node.status(serial).startswith("mounted") and look(alice)["marker"] == "alice's file")
    until("expired grant unmounted", lambda: look(alice)["home"] == [], timeout=20)
    assert node.status(serial).startswith("mounted")  # the Secret stays; the agent's sweep acted


@pytest.mark.parametrize("forgery", ["other-issuer", "other-node-key", "other-node-id"])
def test_forged_or_other_nodes_grant_is_refused(node: Node, alice: str, forgery: str) -> None:
    grant = node.issuer.issue(user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw",
                              mount_path="/lustre/home").grant
    key = channel.node_key(node.core.api_client, NODE_NAME)
    signer, agent_id = node.issuer.signer, NODE_NAME
    if forgery == "other-issuer":
        signer = Ed25519PrivateKey.generate()
    elif forgery == "other-node-key":
        key = X25519PrivateKey.generate().public_key()
    else:
        agent_id = "jg-other-node"
    sealed = seal_for_agent(grant, signer=signer, agent_key=key, agent_id=agent_id)
    channel.send_grant(node.core.api_client, namespace=GRANTS_NS, node=NODE_NAME, grant=grant, sealed=sealed)
    until("refused", lambda: node.status(grant.serial).startswith("refused: invalid grant"))
    assert look(alice)["home"] == [] and not mounts.is_mountpoint(node.staging / "alice" / "home")


def denial(err: ApiException) -> str:
    return str(json.loads(err.body).get("message", "")) if err.body else str(err)


def test_other_host_paths_and_own_seccomp_profiles_are_denied(node: Node, webhook: str) -> None:
    # The hub's pod for bob naming alice's staging directory; anyone's pod claiming alice.
    forged = notebook_pod("bob", "jupyter-bob-forged")
    forged["spec"]["volumes"] = [{"name": "x", "hostPath": {"path": str(node.staging / "alice"), "type": "Directory"}}]
    forged["spec"]["containers"][0]["volumeMounts"] = [{"name": "x", "mountPath": "/data", "readOnly": True}]
    for api in (node.hub, node.core.api_client):
        with pytest.raises(ApiException) as err:
            create_pod(api, forged)
        assert "[pod-security/host-path]" in denial(err.value)
    spoofed = notebook_pod("alice", "jupyter-alice-spoofed")
    spoofed["spec"]["volumes"] = forged["spec"]["volumes"]
    spoofed["spec"]["containers"][0]["volumeMounts"] = forged["spec"]["containers"][0]["volumeMounts"]
    with pytest.raises(ApiException) as err:
        create_pod(node.core.api_client, spoofed)
    assert "[pod-security/host-path]" in denial(err.value)
    # A notebook stating its own seccomp profile is refused with the reason.
    own = notebook_pod("bob", "jupyter-bob-seccomp")
    own["spec"]["containers"][0]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    with pytest.raises(ApiException) as err:
        create_pod(node.hub, own)
    assert "sets seccomp profile RuntimeDefault; notebooks run under Localhost jovial-guard/notebook.json" in denial(err.value)


def targets(node: Node, opa_url: str) -> dict[str, list[Any]]:
    from urllib.parse import urlsplit

    kubelet_port = int(json.loads((node.cluster.dir / "kubelet.json").read_text())["port"])
    bridge, opa_port = node.cluster.network.host_pod_ip, urlsplit(opa_url).port
    return {"archive": [node.hosts.address("archive"), 80], "other": [node.hosts.address("other"), 80],
            "metadata": [METADATA, 80], "hub": [bridge, node.hub_port], "archive_22": [node.hosts.address("archive"), 22],
            "kubelet_node_ip": [node.cluster.network.node_ip, kubelet_port], "kubelet_host_bridge": [bridge, kubelet_port],
            "opa_host_bridge": [bridge, opa_port], "opa_loopback": ["127.0.0.1", opa_port]}


@pytest.fixture(scope="module")
def redteam(node: Node, webhook: str, alice: str) -> dict[str, Any]:
    """The red team in alice's second notebook pod (astro), with alice's grant mounted."""
    serial = node.deliver("alice")
    until("mounted", lambda: node.status(serial).startswith("mounted"))
    env = {"JG_TARGETS": json.dumps(targets(node, webhook))}
    create_pod(node.hub, notebook_pod("alice", "jupyter-alice-redteam", groups=("astro",), command=["python", "-c", REDTEAM], env=env))
    report = wait_finished(node.core, "jupyter-alice-redteam", NS)
    artifacts = Path(__file__).resolve().parents[2] / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "node_isolation_redteam_report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    return report


def test_redteam_egress_in_the_pod(redteam: dict[str, Any]) -> None:
    net = redteam["net"]
    assert (net["archive"], net["hub"]) == (0, 0), net  # the group's allowlist and the hub
    assert net["other"] == errno.EHOSTUNREACH, net  # routed, refused by the pod's rules
    assert net["metadata"] == errno.EHOSTUNREACH, net  # routed through the stand-in, refused
    assert net["archive_22"] == errno.EHOSTUNREACH, net  # the archive only on its allowed port
    assert net["kubelet_node_ip"] == errno.ENETUNREACH, net
    assert net["kubelet_host_bridge"] == net["opa_host_bridge"] == errno.EHOSTUNREACH, net
    assert net["opa_loopback"] == errno.ECONNREFUSED, net


def test_redteam_sees_only_its_own_users_files(redteam: dict[str, Any]) -> None:
    assert redteam["lustre"] == {"home": {"marker": 0}}, redteam["lustre"]
    assert all("bob" not in line for line in redteam["staged"]), redteam["staged"]
    assert (redteam["Seccomp"], redteam["CapEff"], redteam["uid"]) == ("2", "0000000000000000", 1000)


def test_without_the_rules_the_same_hosts_are_reachable(node: Node, webhook: str) -> None:
    """The control: a pod in a namespace the plugin does not guard reaches what alice's could not."""
    pod = notebook_pod("carol", "control", namespace=CONTROL_NS, command=["python", "-c", NETPROBE],
                       env={"JG_TARGETS": json.dumps(targets(node, webhook))})
    pod["metadata"]["labels"] = {"app": "control"}
    create_pod(node.core.api_client, pod)
    net = wait_finished(node.core, "control", CONTROL_NS)["net"]
    assert (net["other"], net["metadata"], net["archive"]) == (0, 0, 0), net


def test_a_notebook_only_by_name_gets_the_notebook_rules(node: Node, webhook: str) -> None:
    """No ``component: singleuser-server`` label and no claims: the policy treats the pod as a
    notebook by its name, the webhook records that, and the agent acts on the record."""
    pod = notebook_pod("dana", "jupyter-dana", command=["python", "-c", NETPROBE],
                       env={"JG_TARGETS": json.dumps(targets(node, webhook))})
    pod["metadata"]["labels"], pod["metadata"]["annotations"] = {"app": "by-name"}, {}
    stored = create_pod(node.core.api_client, pod)
    assert stored["metadata"]["annotations"]["jovial-guard.io/notebook"] == "true"
    assert "component" not in stored["metadata"]["labels"]
    net = wait_finished(node.core, "jupyter-dana", NS)["net"]
    assert net["other"] == net["metadata"] == errno.EHOSTUNREACH, net


def test_no_agent_no_notebook(node: Node, webhook: str) -> None:
    """Fail closed: without the agent's answer the sandbox is torn down and the pod waits."""
    node.stop_agent()
    try:
        create_pod(node.hub, notebook_pod("bob", "jupyter-bob"))
        events = until("FailedCreatePodSandBox naming the plugin", lambda: [
            e.message for e in node.core.list_namespaced_event(NS, field_selector="involvedObject.name=jupyter-bob").items
            if e.reason == "FailedCreatePodSandBox" and PLUGIN_TYPE in (e.message or "")], timeout=90)
        assert "the pod does not start without them" in events[0], events
        assert node.core.read_namespaced_pod("jupyter-bob", NS).status.phase == "Pending"
    finally:
        node.start_agent()
    wait_running(node.core, "jupyter-bob", NS, timeout=180)
