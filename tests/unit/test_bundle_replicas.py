"""The bundle service's replica table, fed by OPA status reports, and the deploy's wait on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.policy.bundle_server import make_bundle_app
from jovial_guard.policy.replicas import wait_replicas


class NoBundle:
    def current_bundle(self) -> None:
        return None


def report(instance: str, revision: str, errors: list[Any] | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"name": "jovial_guard", "active_revision": revision}
    if errors:
        bundle["errors"] = errors
    return {"labels": {"id": instance, "version": "1.22.3"}, "bundles": {"jovial_guard": bundle}}


async def test_status_reports_build_the_replica_table_and_the_wait_uses_it() -> None:
    async with TestClient(TestServer(make_bundle_app(NoBundle()))) as http:  # type: ignore[arg-type]
        url = str(http.make_url("")).rstrip("/")
        assert (await http.post("/status", data=b"not json")).status == 400
        assert (await http.post("/status", json={"bundles": {}})).status == 400  # no instance id
        assert (await http.post("/status", json=report("a", "rev-1"))).status == 200
        assert (await http.post("/status", json=report("b", "rev-0", [{"message": "digest mismatch"}]))).status == 200
        table = await (await http.get("/replicas")).json()
        assert [(r["id"], r["revision"], r["error"]) for r in table] == [("a", "rev-1", ""), ("b", "rev-0", "digest mismatch")]

        assert await wait_replicas(url, "rev-1", replicas=1, timeout=2) >= 0
        with pytest.raises(PolicyEngineUnavailable, match=r"fewer than 2 .*b: rev-0 \(digest mismatch\)"):
            await wait_replicas(url, "rev-1", replicas=2, timeout=0.5)

        async def b_switches() -> None:
            await asyncio.sleep(0.3)
            await http.post("/status", json=report("b", "rev-1"))

        switching = asyncio.ensure_future(b_switches())
        assert await wait_replicas(url, "rev-1", replicas=2, timeout=5) > 0.2
        await switching


def test_a_webhook_pod_counts_when_every_recent_worker_serves_the_revision() -> None:
    """Workers report as POD/PID: a pod is one replica, switched only when all its workers
    heard from lately are; a worker silent for longer than WORKER_STALE is gone."""
    from jovial_guard.policy.replicas import WORKER_STALE, switched_replicas

    def state(ident: str, revision: str, age: float = 1.0) -> dict[str, Any]:
        return {"id": ident, "revision": revision, "age": age, "error": ""}

    states = [state("web-a/10", "rev-1"), state("web-a/11", "rev-0"), state("web-b/7", "rev-1"),
              state("opa-uuid", "rev-1")]
    assert switched_replicas(states, "rev-1") == 2  # web-b and the OPA instance, not web-a
    states[1] = state("web-a/11", "rev-1")
    assert switched_replicas(states, "rev-1") == 3
    states.append(state("web-b/6", "rev-0", age=WORKER_STALE + 1))  # a worker that is gone
    assert switched_replicas(states, "rev-1") == 3
    states.append(state("web-b/8", "rev-0"))
    assert switched_replicas(states, "rev-1") == 2
    assert switched_replicas(states, "rev-9") == 0


async def test_workers_report_their_revision_and_refusal_to_the_bundle_service() -> None:
    """What a worker posts is what OPA's status plugin posts: the table shows it under
    POD/PID with the refusal's reason, and the deploy's wait counts the pod."""
    from jovial_guard.policy.worker_status import WorkerStatus, status_url

    assert status_url("http://svc:8282/bundles/jovial_guard.tar.gz") == "http://svc:8282/status"
    assert status_url("/var/lib/bundle.tar.gz") is None
    async with TestClient(TestServer(make_bundle_app(NoBundle()))) as http:  # type: ignore[arg-type]
        url = str(http.make_url("")).rstrip("/")
        first, second = WorkerStatus(url + "/status", instance="web-a/10"), WorkerStatus(url + "/status", instance="web-a/11")
        await first.report("rev-1", "")
        await second.report("rev-0", "PolicyEngineUnavailable: the bundle has no compiled policy")
        table = await (await http.get("/replicas")).json()
        assert [(r["id"], r["revision"], r["error"]) for r in table] == [
            ("web-a/10", "rev-1", ""), ("web-a/11", "rev-0", "PolicyEngineUnavailable: the bundle has no compiled policy")]
        with pytest.raises(PolicyEngineUnavailable, match="fewer than 1 replicas"):
            await wait_replicas(url, "rev-1", replicas=1, timeout=0.5)
        await second.report("rev-1", "")
        assert await wait_replicas(url, "rev-1", replicas=1, timeout=2) >= 0


def test_workers_behind_are_the_live_ones_on_another_revision() -> None:
    """What the embedded deploy waits on: every worker heard from lately (the hub among
    them) serves the revision; OPA instances and silent workers do not hold it up."""
    from jovial_guard.policy.replicas import WORKER_STALE, workers_behind

    states = [{"id": "jupyterhub/hub", "revision": "rev-0", "age": 1.0, "error": ""},
              {"id": "opa-uuid", "revision": "rev-0", "age": 1.0, "error": ""},
              {"id": "web-a/3", "revision": "rev-0", "age": WORKER_STALE + 1, "error": ""}]
    assert [s["id"] for s in workers_behind(states, "rev-1")] == ["jupyterhub/hub"]
    states[0]["revision"] = "rev-1"
    assert workers_behind(states, "rev-1") == []
    assert workers_behind([], "rev-1") == []
