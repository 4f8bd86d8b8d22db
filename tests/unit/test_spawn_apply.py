"""Applying a spawn plan: all of it or none of it, and never on the hub's event loop.

The namespace and storage steps are stand-ins that record what they were asked to do (the
real ones are covered by tests/integration/test_spawn_applied.py); what is tested here is the
order of the steps, the undo on every failure, and that blocking work leaves the loop free.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jovial_guard.credentials.hub import StoragePlan
from jovial_guard.decision import Decision, SecuritySpec
from jovial_guard.errors import JovialGuardError
from jovial_guard.hardening.egress import NamespaceHandle, NamespacePlan
from jovial_guard.spawn.apply import ApplyFailed, apply_plan
from jovial_guard.spawn.plan import SpawnPlan, render_spawn

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "spawn_plan" / "egress-and-storage.json"


def _plan() -> SpawnPlan:
    import json

    spec = SecuritySpec.from_json(json.loads(VECTOR.read_text())["spec"])
    decision = Decision(allowed=True, reasons=(), spec=spec, policy_revision="r", decision_id="d")
    network = NamespacePlan(name="jg-u-alice-12345678", routes=("10.0.0.0/24",), ruleset="flush ruleset\n")
    storage = StoragePlan(user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw",
                          mount_path="/lustre/home",
                          volume={"/run/stage/alice": {"bind": "/lustre", "mode": "ro", "propagation": "rslave"}})
    return render_spawn(decision, image="img:1", seccomp_path="/s.json", apparmor_supported=False,
                        network=network, storage=storage, home_volume="home-alice", tmpfs_size="512m")


class Networks:
    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail, self.delay = fail, delay

    def apply(self, plan: NamespacePlan) -> NamespaceHandle:
        self.calls.append(("apply", plan.name, threading.current_thread().name))
        time.sleep(self.delay)
        if self.fail:
            raise JovialGuardError("no free link")
        return NamespaceHandle(name=plan.name, path=plan.path, address="10.0.0.2", gateway="10.0.0.1")

    def discard(self, name: str) -> None:
        self.calls.append(("discard", name, threading.current_thread().name))


class Storage:
    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    async def attach_planned(self, plan: StoragePlan) -> dict[str, Any]:
        self.calls.append(("attach", plan.user))
        if self.fail:
            raise JovialGuardError("agent refused the grant")
        return {"serial": "s1", "fileset": plan.fileset}

    async def detach(self, *, user: str, reason: str = "") -> list[str]:
        self.calls.append(("detach", user))
        return []


async def test_success_configures_the_spawner_with_the_plan() -> None:
    plan, spawner = _plan(), SimpleNamespace()
    networks, storage = Networks(), Storage()
    record = await apply_plan(plan, spawner, networks=networks, storage=storage)
    assert [c[0] for c in networks.calls] == ["apply"] and storage.calls == [("attach", "alice")]
    assert spawner.extra_host_config == dict(plan.container.host_config)
    assert spawner.volumes == {k: dict(v) for k, v in plan.container.volumes.items()}
    assert spawner.image == spawner.guard_image == "img:1" and spawner.guard_hardened is True
    assert record.container_address == "10.0.0.2" and record.storage == {"serial": "s1", "fileset": "home/alice"}


async def test_a_failed_storage_step_undoes_the_namespace_and_leaves_the_spawner_alone() -> None:
    plan, spawner = _plan(), SimpleNamespace()
    networks, storage = Networks(), Storage(fail=True)
    with pytest.raises(ApplyFailed) as caught:
        await apply_plan(plan, spawner, networks=networks, storage=storage)
    assert caught.value.step == "storage"
    assert [c[:2] for c in networks.calls] == [("apply", plan.network.name), ("discard", plan.network.name)]  # type: ignore[union-attr]
    assert storage.calls == [("attach", "alice")]  # nothing attached: nothing to detach
    assert not hasattr(spawner, "extra_host_config") and not hasattr(spawner, "guard_hardened")


async def test_a_failed_namespace_step_undoes_the_storage_attached_beside_it() -> None:
    plan, spawner = _plan(), SimpleNamespace()
    networks, storage = Networks(fail=True), Storage()
    with pytest.raises(ApplyFailed) as caught:
        await apply_plan(plan, spawner, networks=networks, storage=storage)
    assert caught.value.step == "network" and [c[0] for c in networks.calls] == ["apply"]
    assert storage.calls == [("attach", "alice"), ("detach", "alice")]
    assert not hasattr(spawner, "guard_hardened")


async def test_namespace_and_storage_are_made_at_the_same_time() -> None:
    plan = _plan()
    networks = Networks(delay=0.3)

    class SlowStorage(Storage):
        async def attach_planned(self, plan: StoragePlan) -> dict[str, Any]:
            await asyncio.sleep(0.3)
            return await super().attach_planned(plan)

    started = time.perf_counter()
    await apply_plan(plan, SimpleNamespace(), networks=networks, storage=SlowStorage())
    assert time.perf_counter() - started < 0.55, "the two steps ran one after the other"


async def test_a_spawner_failure_after_storage_undoes_storage_then_namespace() -> None:
    plan = _plan()

    class Refusing(SimpleNamespace):
        def __setattr__(self, key: str, value: Any) -> None:
            if key == "mem_limit":
                raise RuntimeError("spawner refused a setting")
            super().__setattr__(key, value)

    networks, storage = Networks(), Storage()
    with pytest.raises(RuntimeError, match="refused a setting"):
        await apply_plan(plan, Refusing(), networks=networks, storage=storage)
    assert storage.calls == [("attach", "alice"), ("detach", "alice")]
    assert [c[0] for c in networks.calls] == ["apply", "discard"]


async def test_namespace_work_runs_off_the_event_loop() -> None:
    plan = _plan()
    networks = Networks(delay=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await apply_plan(plan, SimpleNamespace(), networks=networks, storage=Storage())
    task.cancel()
    assert networks.calls[0][2] != threading.current_thread().name
    assert ticks >= 10, "the loop stood still while the namespace was made"
