"""The hook's listeners run at once, off the event loop, and never break a spawn."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

from jovial_guard.decision import Decision
from jovial_guard.spawn.listeners import tell_decision_listeners, tell_spawn_listeners
from jovial_guard.workload import Workload


def test_spawn_listeners_run_at_once_on_worker_threads() -> None:
    threads: list[str] = []

    def slow(spawner: Any, doc: dict[str, Any]) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.3)

    def failing(spawner: Any, doc: dict[str, Any]) -> None:
        raise RuntimeError("disk full")

    async def run() -> tuple[float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        started = time.perf_counter()
        spawner = SimpleNamespace(log=logging.getLogger("test-listeners"))
        await tell_spawn_listeners([slow, slow, failing], spawner, {"profile": "default"})
        task.cancel()
        return time.perf_counter() - started, ticks

    took, ticks = asyncio.run(run())
    assert took < 0.55, "the listeners ran one after the other"
    assert ticks >= 10, "the event loop stood still while the listeners ran"
    assert len(threads) == 2 and threading.main_thread().name not in threads


def test_decision_listeners_coroutine_objects_are_awaited_on_the_loop() -> None:
    seen: list[tuple[str, bool]] = []

    class AsyncListener:
        async def __call__(self, workload: Workload, decision: Decision, seconds: float) -> None:
            seen.append(("async", threading.current_thread() is threading.main_thread()))

    def plain(workload: Workload, decision: Decision, seconds: float) -> None:
        seen.append(("plain", threading.current_thread() is threading.main_thread()))

    workload = Workload(origin="spawn", kind="Pod", name="jupyter-ann", namespace="", pod={})
    decision = Decision.deny("policy-engine-unavailable", "test")
    asyncio.run(tell_decision_listeners([AsyncListener(), plain], workload, decision, 0.01))
    assert sorted(seen) == [("async", True), ("plain", False)]
