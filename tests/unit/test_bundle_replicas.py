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
