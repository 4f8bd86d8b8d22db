"""The start queue: a fixed number of spawns start at once, the rest wait in arrival order,
and a waiting user's spawn page (the spawner's progress events) says how many are ahead.

The progress test runs the real pre-spawn hook (real OPA decisions, egress off) on real
GuardedDockerSpawner objects: three users at once with one slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from jovial_guard.policy.opa_process import ManagedOpa
from jovial_guard.spawn.guard import JovialGuard, SpawnRefused
from jovial_guard.spawn.queue import StartQueue
from jovial_guard.spawn.spawner import GuardedDockerSpawner


def test_slots_then_arrival_order() -> None:
    async def run() -> None:
        queue = StartQueue(2)
        tickets = [queue.enter(f"u{i}") for i in range(5)]
        assert [t.granted.is_set() for t in tickets] == [True, True, False, False, False]
        assert [queue.ahead_of(t) for t in tickets] == [None, None, 0, 1, 2]
        queue.release(tickets[1])
        assert tickets[2].granted.is_set() and not tickets[3].granted.is_set()
        assert queue.ahead_of(tickets[4]) == 1
        queue.release(tickets[1])  # idempotent: frees nothing more
        assert not tickets[3].granted.is_set()
        assert (queue.starting, queue.waiting) == (2, 2)

    asyncio.run(run())


def test_a_cancelled_wait_gives_its_place_up() -> None:
    async def run() -> None:
        queue = StartQueue(1)
        first, second, third = (queue.enter(k) for k in ("a", "b", "c"))
        waiter = asyncio.ensure_future(queue.wait(second))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert queue.ahead_of(third) == 0
        queue.release(first)
        assert third.granted.is_set() and not second.granted.is_set()

    asyncio.run(run())


def test_a_slot_held_too_long_is_taken_back() -> None:
    async def run() -> None:
        queue = StartQueue(1, max_hold=0.05)
        stuck, next_one = queue.enter("stuck"), queue.enter("next")
        await asyncio.wait_for(queue.wait(next_one), 2)
        assert stuck.released and next_one.granted.is_set()

    asyncio.run(run())


def test_positions_follow_the_queue() -> None:
    async def run() -> list[int]:
        queue = StartQueue(1)
        held = queue.enter("held")
        others = [queue.enter(f"w{i}") for i in range(3)]
        seen: list[int] = []

        async def watch() -> None:
            async for ahead in queue.positions(others[2]):
                seen.append(ahead)

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0.01)
        for ticket in (held, others[0], others[1]):
            queue.release(ticket)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(watcher, 2)
        return seen

    assert asyncio.run(run()) == [2, 1, 0]


def test_queue_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        StartQueue(0)


@pytest.fixture(scope="module")
def opa() -> Iterator[ManagedOpa]:
    with ManagedOpa() as server:
        yield server


@pytest.fixture
def guard_config(opa: ManagedOpa) -> Iterator[Config]:
    config = Config()
    config.JovialGuard.opa_url = opa.url
    config.JovialGuard.egress = False
    config.JovialGuard.apparmor_supported = False
    config.JovialGuard.deadline = 5.0
    config.JovialGuard.start_slots = 1
    JovialGuard.clear_instance()
    yield config
    JovialGuard.clear_instance()


def _spawner(config: Config, name: str) -> GuardedDockerSpawner:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name="astro")], admin=False,
                           url=f"/user/{name}/", escaped_name=name)
    spawner = GuardedDockerSpawner(config=config, user=user, log=logging.getLogger("test-queue"))
    spawner.user_options = {"profile": "default"}
    return spawner


def test_waiting_users_see_their_place_on_the_spawn_page(guard_config: Config) -> None:
    """Three spawns at once, one slot: the third user's progress events count down."""

    async def run() -> tuple[list[str], list[str]]:
        guard = JovialGuard.instance(config=guard_config)
        spawners = [_spawner(guard_config, n) for n in ("ann", "ben", "cat")]
        for s in spawners:
            s._spawn_pending = True
        hooks = [asyncio.ensure_future(guard.pre_spawn(s)) for s in spawners]
        await asyncio.wait_for(hooks[0], 30)
        assert not hooks[1].done() and not hooks[2].done()

        cat_events: list[str] = []

        async def follow(spawner: GuardedDockerSpawner, into: list[str]) -> None:
            async for event in spawner.progress():
                into.append(str(event["message"]))
                if event["message"].startswith("your turn"):
                    return

        cat = asyncio.ensure_future(follow(spawners[2], cat_events))
        await asyncio.sleep(0.1)
        guard.release_slot(spawners[0])  # ann's server answers: ben's turn
        await asyncio.wait_for(hooks[1], 30)
        await asyncio.sleep(0.1)
        guard.release_slot(spawners[1])
        await asyncio.wait_for(hooks[2], 30)
        await asyncio.wait_for(cat, 5)
        records = [h.result() for h in hooks]
        assert all(r["profile"] == "default" for r in records)
        guard.release_slot(spawners[2])
        await guard.close()
        return cat_events, [s.guard_ticket.key for s in spawners]

    events, keys = asyncio.run(run())
    assert events[:2] == [
        "waiting: 1 user ahead of you (1 servers start at a time)",
        "waiting: 0 users ahead of you (1 servers start at a time)",
    ]
    assert events[2].startswith("your turn")
    assert keys == ["ann", "ben", "cat"]


def test_a_refused_spawn_gives_its_slot_back(guard_config: Config) -> None:
    async def run() -> None:
        guard = JovialGuard.instance(config=guard_config)
        refused, waiting = _spawner(guard_config, "dan"), _spawner(guard_config, "eve")
        refused.user_options = {"profile": "gpu"}  # not allowed for this user
        refused._spawn_pending = waiting._spawn_pending = True
        with pytest.raises(SpawnRefused):
            await guard.pre_spawn(refused)
        await asyncio.wait_for(guard.pre_spawn(waiting), 30)
        queue = guard.queue()
        assert queue is not None and queue.starting == 1 and queue.waiting == 0
        guard.release_slot(waiting)
        assert queue.starting == 0
        await guard.close()

    asyncio.run(run())
