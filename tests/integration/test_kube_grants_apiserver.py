"""The hub's grant delivery against a real kube-apiserver and a real node agent's grant loop.

No kubelet: the pods are the manifests the spawner's reflector would hold (scheduled, with the
webhook's storage record), the node agent is :class:`jovial_guard.node.grants.NodeGrants` run
in this process (its real bind mounts on a temporary staging root), and the Node objects are
created by the cluster admin. What is tested is :class:`jovial_guard.kube.grants.KubeGrants`
over the real API: how a spawn fails when a node has no agent key, when the agent never
answers or refuses, and that stop and revocations (in the hub process and elsewhere) delete
the grant's Secret so the agent unmounts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes import client, config

from jovial_guard.admission.records import STORAGE_ANNOTATION, StorageRecord
from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.kube.grants import ApiChannel, GrantNotDelivered, KubeGrants
from jovial_guard.node import grant_channel as channel
from jovial_guard.node.grants import NodeGrants
from jovial_guard.node.labels import NodeLabels

NS = "jovial-guard-node"
ALICE = StorageRecord(fileset="home/alice", mode="rw", mount_path="/lustre/home", uid=1000, gid=100)


@pytest.fixture(scope="module")
def api() -> Iterator[client.ApiClient]:
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as cluster:  # type: ignore[arg-type]
        admin = config.new_client_from_config(str(cluster.kubeconfig))
        core = client.CoreV1Api(admin)
        core.create_namespace({"metadata": {"name": NS}})
        for name in ("n0", "n1", "n2"):
            core.create_node({"metadata": {"name": name}})
        yield admin


@pytest.fixture()
def issuer(tmp_path: Path) -> Issuer:
    return Issuer.from_directory(tmp_path / "hub" / "credentials", keyring_path=tmp_path / "hub" / "keys" / "kek.json",
                                 create=True)


def grants_for(api: client.ApiClient, issuer: Issuer, **settings: Any) -> KubeGrants:
    return KubeGrants(issuer=issuer, channel=ApiChannel(api, namespace=NS), poll_interval=0.1, **settings)


class Agent:
    """A node agent's grant loop for ``node``, in a thread, on its own staging root."""

    def __init__(self, api: client.ApiClient, node: str, root: Path, issuer_key: Any) -> None:
        (root / "lustre" / "home" / "alice").mkdir(parents=True)
        (root / "lustre" / "home" / "alice" / "marker").write_text("alice's file\n")
        self.staging = root / "staging"
        self.grants = NodeGrants(api, node_name=node, namespace=NS, state_dir=root / "agent", issuer_key=issuer_key,
                                 storage_root=root / "lustre", staging_root=self.staging)
        self.grants.publish_key(NodeLabels(api, node))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> Agent:
        def loop() -> None:
            while not self._stop.wait(0.2):
                self.grants.sync()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.grants.teardown()

    def mounted(self) -> bool:
        return mounts.is_mountpoint(self.staging / "alice" / "home")


@pytest.fixture()
def agent(api: client.ApiClient, issuer: Issuer, tmp_path: Path) -> Iterator[Agent]:
    running = Agent(api, "n1", tmp_path / "n1", issuer.signer.public_key()).run()
    try:
        yield running
    finally:
        running.close()


def pod(node: str, record: StorageRecord | None = ALICE) -> dict[str, Any]:
    annotations = {STORAGE_ANNOTATION: record.to_annotation()} if record is not None else {}
    return {"metadata": {"name": "jupyter-alice", "annotations": annotations}, "spec": {"nodeName": node}}


def secrets(api: client.ApiClient) -> list[str]:
    return sorted(s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret(NS).items)


async def until(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.1)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


async def test_a_node_without_an_agent_key_fails_the_spawn_saying_so(api: client.ApiClient, issuer: Issuer) -> None:
    with pytest.raises(GrantNotDelivered) as err:
        await grants_for(api, issuer).attach(user="alice", pod=lambda: pod("n0"))
    assert str(err.value) == ("your storage was not attached: node 'n0' has no jovial-guard.io/grant-key annotation: "
                              "is its node agent running with credentials enabled?")
    assert issuer.live_serials(user="alice") == [] and secrets(api) == []


async def test_an_agent_that_never_answers_fails_the_spawn_and_the_grant_goes(api: client.ApiClient, issuer: Issuer,
                                                                             tmp_path: Path) -> None:
    silent = Agent(api, "n2", tmp_path / "n2", issuer.signer.public_key())  # key published, never syncs
    try:
        with pytest.raises(GrantNotDelivered) as err:
            await grants_for(api, issuer, mount_timeout=1.0).attach(user="alice", pod=lambda: pod("n2"))
        assert str(err.value) == ("your storage was not attached: no answer within 1 s while waiting for the node agent "
                                  "on n2 to mount home/alice (is the jovial-guard node agent running there?)")
        assert issuer.live_serials(user="alice") == [] and secrets(api) == []
    finally:
        silent.close()


async def test_the_agents_refusal_reaches_the_spawn(api: client.ApiClient, issuer: Issuer, tmp_path: Path) -> None:
    stranger = Agent(api, "n2", tmp_path / "n2", Ed25519PrivateKey.generate().public_key()).run()  # trusts another issuer
    try:
        with pytest.raises(GrantNotDelivered) as err:
            await grants_for(api, issuer).attach(user="alice", pod=lambda: pod("n2"))
        assert str(err.value) == ("your storage was not attached: the node agent on n2 refused: invalid grant "
                                  "(not sealed to node n2 by the issuer)")
        assert issuer.live_serials(user="alice") == [] and secrets(api) == []
    finally:
        stranger.close()


async def test_the_spawners_own_failure_comes_first(api: client.ApiClient, issuer: Issuer) -> None:
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    started.set_exception(RuntimeError("the policy refused this server: [profiles/not-allowed]"))
    with pytest.raises(RuntimeError, match="profiles/not-allowed"):
        await grants_for(api, issuer).attach(user="alice", pod=lambda: None, started=started)


async def test_a_pod_whose_decision_names_no_storage_gets_no_grant(api: client.ApiClient, issuer: Issuer) -> None:
    assert await grants_for(api, issuer).attach(user="alice", pod=lambda: pod("n1", None)) is None
    assert issuer.live_serials(user="alice") == []


async def test_mounted_until_stopped(api: client.ApiClient, issuer: Issuer, agent: Agent) -> None:
    grants = grants_for(api, issuer)
    attached = await grants.attach(user="alice", pod=lambda: pod("n1"))
    assert attached is not None and attached.node == "n1" and attached.status.startswith("mounted home/alice (rw) for alice")
    assert agent.mounted() and secrets(api) == [channel.secret_name(attached.serial)]
    assert await grants.detach(user="alice") == [attached.serial]
    assert secrets(api) == []
    await until(lambda: not agent.mounted())
    await grants.close()


async def test_revocations_in_the_hub_and_elsewhere_withdraw_the_grant(api: client.ApiClient, issuer: Issuer,
                                                                      agent: Agent, tmp_path: Path) -> None:
    grants = grants_for(api, issuer)
    # In the hub process (the audit responder): the listener deletes the Secret at once.
    first = await grants.attach(user="alice", pod=lambda: pod("n1"))
    assert first is not None and agent.mounted()
    issuer.revoke(serial=first.serial, reason="audit: compromised notebook")
    assert secrets(api) == []
    await until(lambda: not agent.mounted())
    # Another process (`jovial-guard creds revoke`): the revocation list, read at the next tick.
    second = await grants.attach(user="alice", pod=lambda: pod("n1"))
    assert second is not None and agent.mounted()
    elsewhere = Issuer.from_directory(tmp_path / "hub" / "credentials", keyring_path=tmp_path / "hub" / "keys" / "kek.json")
    elsewhere.revoke(user="alice", reason="admin revoke")
    assert secrets(api) == [channel.secret_name(second.serial)]  # not yet: another process
    await asyncio.to_thread(grants.tick)
    assert secrets(api) == []
    await until(lambda: not agent.mounted())
    await grants.close()
