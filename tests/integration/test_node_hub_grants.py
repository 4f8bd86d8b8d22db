"""The hub delivers storage grants itself: a real JupyterHub with KubeSpawner on a real node.

One single-node cluster; the project's webhook (host process, real OPA) on a copy of the
committed policies with the node's staging root set and the astro group's fileset
(``projects/astro``, read-only, at /lustre/project); ``jovial-guard node-agent`` as a host
process with profiles and grants (it publishes its node key; the issuer's public key is the
hub's). The hub is z2jh's configuration of deploy/zero-to-jupyterhub/values.yaml
(``node_hub``): ``jovial_guard.kube.spawner.JovialGuardKubeSpawner`` with storage grants, the
issuer's keys in the hub's state directory, the hub's service account given
deploy/zero-to-jupyterhub/hub-grants-rbac.yaml. Nothing in these tests issues or delivers a
grant for a spawned user: the hub does, from the webhook's storage record on the pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

import yaml
from kubernetes import client, config
from kubernetes.utils import create_from_yaml

from jovial_guard.admission.records import STORAGE_ANNOTATION, StorageRecord
from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.backends.bind import BindBackend
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.node import grant_channel as channel
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

from . import userflow
from .node_agent_run import AgentLoop
from .node_cluster import NODE_NAME, NodeCluster
from .node_hub import NodeHub
from .node_images import notebook_image
from .node_isolation_pods import policy_copy, until
from .node_webhook import registered_webhook

REPO = Path(__file__).resolve().parents[2]
HUB_NS, GRANTS_NS = "jhub", "jovial-guard-node"

#: Runs in the user's kernel: what the notebook sees under /lustre, and its mounts there.
CELL = r"""
import json, os
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return exc.errno
def read(path):
    try:
        return open(path).read()
    except OSError as exc:
        return exc.errno
mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith("/lustre")]
print(json.dumps({"lustre": listing("/lustre"), "project": listing("/lustre/project"),
                  "home": listing("/lustre/home"), "project_marker": read("/lustre/project/marker"),
                  "home_marker": read("/lustre/home/marker"), "mounts": mounts}))
"""


class Node:
    """The cluster, the agent and the paths the tests look at."""

    def __init__(self, cluster: NodeCluster, core: client.CoreV1Api) -> None:
        self.cluster, self.core = cluster, core
        self.agent: AgentLoop | None = None

    @property
    def staging(self) -> Path:
        return self.cluster.dir / "staging"

    @property
    def storage(self) -> Path:
        return self.cluster.dir / "lustre"

    def secrets(self, user: str) -> list[Any]:
        return list(self.core.list_namespaced_secret(GRANTS_NS, label_selector=f"{channel.USER_LABEL}={user}").items)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    cluster = NodeCluster(preinstall_profiles=False)
    with cluster:
        core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
        cluster.make_namespace(core, HUB_NS, {"jovial-guard.io/guarded": "true"})
        cluster.make_namespace(core, GRANTS_NS)
        for fileset, owner in (("projects/astro", "astro"), ("home/bob", "bob"), ("home/carol", "carol")):
            (cluster.dir / "lustre" / fileset).mkdir(parents=True)
            (cluster.dir / "lustre" / fileset / "marker").write_text(f"{owner}'s file\n")
        shared = Node(cluster, core)
        try:
            yield shared
        finally:
            if shared.agent is not None:
                shared.agent.stop()
            BindBackend(storage_root=shared.storage, staging_root=shared.staging,
                        work_root=cluster.dir / "agent-state" / "work").teardown()
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def hub(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHub]:
    """Webhook, agent (trusting the hub's issuer key) and the hub, in that order."""
    d = node.cluster.dir
    policies = policy_copy(DEFAULT_POLICY_DIR, d / "policies", staging_root=node.staging, archive="192.0.2.1")
    data = json.loads((policies / "data.json").read_text())
    data["settings"]["storage"]["group_order"] = ["astro"]  # astro's members get the group's fileset
    (policies / "data.json").write_text(json.dumps(data, indent=1))
    work = tmp_path_factory.mktemp("hub-grants")
    hub = NodeHub(node.cluster, work, notebook_image=notebook_image(), extra_config=(
        "c.JupyterHub.load_groups = {'astro': {'users': ['alice']}}\n"
        "c.KubeGrants.tick_interval = 1.0\n"
        "c.KubeGrants.mount_timeout = 60.0\n"))
    # The hub's issuer keys exist before the agents are told its public key (as at install).
    Issuer.from_directory(hub.state / "credentials", keyring_path=hub.state / "credentials-keys" / "kek.json", create=True)
    issuer_pub = hub.state / "credentials-keys" / "issuer-signing.pub"
    assert issuer_pub.is_file(), sorted(p.name for p in (hub.state / "credentials-keys").iterdir())
    create_from_yaml(node.core.api_client, str(REPO / "deploy" / "zero-to-jupyterhub" / "hub-grants-rbac.yaml"))
    with registered_webhook(node.core.api_client, tmp_path_factory.mktemp("hub-grants-webhook"), policy_dir=policies):
        node.agent = AgentLoop(node.cluster, d / "agent.log", interval=2, extra=(
            "--state-dir", str(d / "agent-state"), "--grants-namespace", GRANTS_NS, "--issuer-key", str(issuer_pub),
            "--storage-root", str(node.storage), "--staging-root", str(node.staging), "--grant-interval", "0.5"))
        until("grant key published", lambda: ((node.cluster.get_object("node", NODE_NAME) or {}).get("metadata", {})
                                               .get("annotations", {}).get(channel.KEY_ANNOTATION)), timeout=60)
        try:
            hub.start()
            yield hub
        finally:
            hub.stop()


def spawn(hub: NodeHub, user: str) -> Any:
    session = userflow.login(hub.url, user, "any")
    error = userflow.spawn_from_form(session, hub.url, user, "default", timeout=240)
    assert error == "", f"{error}\n{hub.diagnosis('jupyter-' + user)}"
    return session


def cell(hub: NodeHub, user: str, session: Any) -> dict[str, Any]:
    out = userflow.run_cell(hub.url, user, session, CELL, timeout=120)
    assert out["status"] == "ok", f"{out}\n{hub.diagnosis('jupyter-' + user)}"
    return json.loads(out["stdout"].strip().splitlines()[-1])  # type: ignore[no-any-return]


def stop(node: Node, hub: NodeHub, user: str, session: Any) -> None:
    resp = session.delete(f"{hub.url}/hub/api/users/{user}/server", headers=userflow._auth(session, hub.url, user),
                          timeout=120)
    assert resp.status_code in (202, 204), resp.text
    until(f"{user}'s pod deleted", lambda: node.cluster.get_object("pod", f"jupyter-{user}", HUB_NS) is None, timeout=120)


def test_a_groups_fileset_reaches_the_notebook_and_stop_withdraws_it(node: Node, hub: NodeHub) -> None:
    started = time.monotonic()
    session = spawn(hub, "alice")
    print(f"\nspawn with the grant mounted: {time.monotonic() - started:.1f} s")
    try:
        pod = node.cluster.get_object("pod", "jupyter-alice", HUB_NS)
        assert pod is not None
        record = StorageRecord.from_annotation(pod["metadata"]["annotations"][STORAGE_ANNOTATION])
        assert (record.fileset, record.mode, record.mount_path) == ("projects/astro", "ro", "/lustre/project")
        (secret,) = node.secrets("alice")
        assert secret.metadata.labels[channel.NODE_LABEL] == NODE_NAME
        assert secret.metadata.annotations[channel.STATUS_ANNOTATION].startswith("mounted projects/astro (ro) for alice")
        # Only sealed bytes in the Secret; nothing of it in the pod's spec.
        assert set(secret.data) == {channel.SEALED_KEY}
        assert not any("secret" in v or "projected" in v for v in pod["spec"]["volumes"])
        # Another user's fileset mounted on the same node, in that user's staging directory.
        issuer = Issuer.from_directory(hub.state / "credentials", keyring_path=hub.state / "credentials-keys" / "kek.json")
        carol = issuer.issue(user="carol", uid=1000, gid=100, fileset="home/carol", mode="rw", mount_path="/lustre/home").grant
        channel.deliver(node.core.api_client, issuer, carol, node=NODE_NAME, namespace=GRANTS_NS)
        until("carol's fileset mounted on the node", lambda: mounts.is_mountpoint(node.staging / "carol" / "home"))
        seen = cell(hub, "alice", session)
        print(f"alice's notebook sees: {seen}")
        assert seen["lustre"] == ["project"], seen
        assert seen["project"] == ["marker"] and seen["project_marker"] == "astro's file\n", seen
        assert seen["home"] == 2 and seen["home_marker"] == 2, seen  # ENOENT: no one else's home
        assert seen["mounts"] == ["/lustre", "/lustre/project"], seen
        channel.withdraw_grant(node.core.api_client, namespace=GRANTS_NS, serial=carol.serial)
    finally:
        stop(node, hub, "alice", session)
    until("alice's grant Secret deleted on stop", lambda: node.secrets("alice") == [], timeout=30)
    until("alice's fileset unmounted on the node", lambda: not mounts.is_mountpoint(node.staging / "alice" / "project"),
          timeout=30)
    until("carol's fileset unmounted", lambda: not mounts.is_mountpoint(node.staging / "carol" / "home"), timeout=30)


def test_revoking_from_the_hub_removes_the_fileset_from_the_running_notebook(node: Node, hub: NodeHub) -> None:
    session = spawn(hub, "bob")
    try:
        seen = cell(hub, "bob", session)
        assert seen["lustre"] == ["home"] and seen["home_marker"] == "bob's file\n", seen
        # The admins' revoke: `jovial-guard creds revoke` on the hub's state, another process.
        revoked = subprocess.run([sys.executable, "-m", "jovial_guard", "creds", "--state-dir", str(hub.state / "credentials"),
                                  "--key-dir", str(hub.state / "credentials-keys"), "revoke", "--user", "bob",
                                  "--reason", "compromised notebook"], capture_output=True, text=True, timeout=60, check=False)
        assert revoked.returncode == 0 and "revoked 1 grant(s)" in revoked.stdout, revoked.stderr
        started = time.monotonic()
        until("bob's grant Secret withdrawn by the hub", lambda: node.secrets("bob") == [], timeout=30)
        until("bob's fileset gone from the running notebook", lambda: cell(hub, "bob", session)["home"] == [], timeout=60)
        print(f"\nrevocation reached the running notebook in {time.monotonic() - started:.1f} s")
        assert node.cluster.get_object("pod", "jupyter-bob", HUB_NS)["status"]["phase"] == "Running"  # type: ignore[index]
    finally:
        stop(node, hub, "bob", session)
    assert "Traceback" not in hub.log().split("jupyter-bob", 1)[-1], hub.log()[-3000:]


def test_a_node_without_an_agent_key_fails_the_spawn_with_the_reason(node: Node, hub: NodeHub) -> None:
    """Runs last: it stops the agent. The spawn page says why; no pod, Secret or live grant stays."""
    assert node.agent is not None
    node.agent.stop()
    node.agent = None
    node.core.patch_node(NODE_NAME, {"metadata": {"annotations": {channel.KEY_ANNOTATION: None}}})
    session = userflow.login(hub.url, "carol", "any")
    error = userflow.spawn_from_form(session, hub.url, "carol", "default", timeout=240)
    print(f"\nspawn page without a node key: {error}")
    assert error == (f"Spawn failed: your storage was not attached: node {NODE_NAME!r} has no {channel.KEY_ANNOTATION} "
                     "annotation: is its node agent running with credentials enabled?"), error
    until("carol's pod deleted", lambda: node.cluster.get_object("pod", "jupyter-carol", HUB_NS) is None, timeout=120)
    assert node.secrets("carol") == []
    issuer = Issuer.from_directory(hub.state / "credentials", keyring_path=hub.state / "credentials-keys" / "kek.json")
    assert issuer.live_serials(user="carol") == []


def test_rbac_is_what_the_hub_needs(node: Node) -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "zero-to-jupyterhub" / "hub-grants-rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == GRANTS_NS
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "delete"]}]
