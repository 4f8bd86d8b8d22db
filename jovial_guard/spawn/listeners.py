"""Telling the hook's listeners, all at once and never on the hub's event loop.

Why: listeners write files and databases (decision log, spawn registry, hardening record)
or post to the audit service, each durably. One after the other on the event loop, they
would add up inside every spawn and stall the hub meanwhile. Plain functions run on worker
threads and coroutines on the loop, all concurrently; a listener's failure is logged and
never changes or breaks the spawn.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..decision import Decision
from ..policy.engine import DecisionListener
from ..workload import Workload

log = logging.getLogger(__name__)


def import_callable(spec: Any) -> Callable[..., Any]:
    """``spec`` itself if callable, else the ``module:attr`` it names (configuration strings)."""
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    module, _, attr = str(spec).partition(":")
    target = getattr(importlib.import_module(module), attr)
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    # A coroutine function, or an object whose __call__ is one, runs on the loop.
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        await fn(*args)
        return
    result = await asyncio.to_thread(fn, *args)
    if asyncio.iscoroutine(result):
        await result


async def tell_spawn_listeners(listeners: Sequence[Callable[..., Any]], spawner: Any,
                               doc: dict[str, Any]) -> None:
    """``listener(spawner, doc)`` for each; failures go to the spawner's log."""

    async def one(listener: Callable[..., Any]) -> None:
        try:
            await _call(listener, spawner, doc)
        except Exception:
            spawner.log.exception("jovial_guard spawn listener failed")

    await asyncio.gather(*(one(x) for x in listeners))


async def tell_decision_listeners(listeners: Sequence[DecisionListener], workload: Workload,
                                  decision: Decision, seconds: float) -> None:
    """``listener(workload, decision, seconds)`` for each; failures are logged."""

    async def one(listener: DecisionListener) -> None:
        try:
            await _call(listener, workload, decision, seconds)
        except Exception:
            log.exception("decision listener failed")

    await asyncio.gather(*(one(x) for x in listeners))
