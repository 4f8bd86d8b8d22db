"""JovialGuardKubeSpawner's start and stop around the grant delivery.

KubeSpawner's own start and stop are replaced by recorders (they need a cluster; the node
test runs the real ones), and the grant delivery by a recorder that fails or succeeds as
told (tests/integration/test_kube_grants_apiserver.py runs the real one): what is tested is
the spawner's order of things: a failed delivery deletes the pod and reaches the user with
its reason, a webhook refusal keeps the policy's message, a stop withdraws the grant.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubespawner import KubeSpawner
from traitlets.config import Config

from jovial_guard.errors import Unavailable
from jovial_guard.kube.grants import Attached, GrantNotDelivered
from jovial_guard.kube.spawner import JovialGuardKubeSpawner
from tests.admission.kubespawner_pods import _dummy_kubeconfig

DENIAL = {"message": 'admission webhook "mutate.jovial-guard.io" denied the request: [profiles/not-allowed] no.'}


class Grants:
    """Records the spawner's calls; ``attach`` fails with ``fail`` or returns a mounted grant."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail, self.calls = fail, []  # type: list[str]

    async def attach(self, *, user: str, pod: Any, started: asyncio.Future[Any]) -> Attached:
        self.calls.append(f"attach {user}")
        await asyncio.sleep(0.05)
        if started.done() and started.exception() is not None:
            started.result()
        if self.fail is not None:
            raise self.fail
        return Attached(serial="0" * 32, node="n1", fileset="home/ann", mode="rw", mount_path="/lustre/home",
                        expires=1, status="mounted home/ann (rw) for ann")

    async def detach(self, *, user: str, reason: str) -> list[str]:
        self.calls.append(f"detach {user}: {reason}")
        return []

    def open(self) -> None:
        self.calls.append("open")

    def start_background(self) -> None:
        self.calls.append("round")


@pytest.fixture
async def spawner(monkeypatch: pytest.MonkeyPatch) -> tuple[JovialGuardKubeSpawner, list[str]]:
    kube: list[str] = []

    async def start(self: KubeSpawner) -> str:
        kube.append("kube start")
        await asyncio.sleep(0.2)
        if getattr(self, "refuse", None) is not None:
            raise self.refuse
        return "http://10.0.0.5:8888"

    async def stop(self: KubeSpawner, now: bool = False) -> None:
        kube.append(f"kube stop now={now}")

    async def poll(self: KubeSpawner) -> None:
        kube.append("kube poll")

    monkeypatch.setattr(KubeSpawner, "start", start)
    monkeypatch.setattr(KubeSpawner, "stop", stop)
    monkeypatch.setattr(KubeSpawner, "poll", poll)
    config = Config()
    config.JovialGuardKubeSpawner.storage_grants = True
    with _dummy_kubeconfig():
        made = JovialGuardKubeSpawner(_mock=True, config=config,
                                      user=SimpleNamespace(name="ann", id=1, url="/user/ann/", groups=[]))
    return made, kube


def use(monkeypatch: pytest.MonkeyPatch, grants: Grants) -> None:
    monkeypatch.setattr(JovialGuardKubeSpawner, "_grants", lambda self: grants)


async def test_mounted_then_started_then_stop_withdraws(spawner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made, kube = spawner
    grants = Grants()
    use(monkeypatch, grants)
    assert await made.start() == "http://10.0.0.5:8888"
    assert made.guard_storage["node"] == "n1" and "secret" not in made.guard_storage
    await made.stop()
    assert kube == ["kube start", "kube stop now=False"]
    assert grants.calls == ["attach ann", "detach ann: server stopped"] and made.guard_storage == {}


async def test_a_failed_delivery_deletes_the_pod_and_says_why(spawner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made, kube = spawner
    grants = Grants(fail=GrantNotDelivered("your storage was not attached: node 'n1' has no key"))
    use(monkeypatch, grants)
    with pytest.raises(GrantNotDelivered, match="node 'n1' has no key"):
        await made.start()
    assert kube == ["kube start", "kube stop now=True"]
    assert grants.calls == ["attach ann", "detach ann: server stopped"]


async def test_the_webhooks_refusal_keeps_the_policys_message_and_deletes_nothing(
        spawner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes_asyncio.client.rest import ApiException

    made, kube = spawner
    grants = Grants()
    use(monkeypatch, grants)
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps(DENIAL)
    made.refuse = refused
    with pytest.raises(RuntimeError) as err:
        await made.start()
    assert str(err.value) == "the policy refused this server: [profiles/not-allowed] no."
    assert kube == ["kube start"] and grants.calls == ["attach ann"]


async def test_a_stop_whose_withdrawal_fails_still_stops(spawner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made, kube = spawner

    class Down(Grants):
        async def detach(self, *, user: str, reason: str) -> list[str]:
            raise Unavailable("the API server is unreachable")

    use(monkeypatch, Down())
    await made.stop(now=True)
    assert kube == ["kube stop now=True"]


async def test_poll_resumes_the_grants_round_after_a_hub_restart(spawner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made, kube = spawner
    grants = Grants()
    use(monkeypatch, grants)
    assert await made.poll() is None
    assert grants.calls == ["open", "round"] and kube == ["kube poll"]

    class Down(Grants):
        def open(self) -> None:
            raise Unavailable("the API server is unreachable")

    use(monkeypatch, Down())
    assert await made.poll() is None  # the server's state still comes from KubeSpawner
