"""Wait until the webhook replicas activated a revision, as the bundle service saw it.

Each replica's OPA listens on loopback inside its pod, out of a policy admin's reach; its
status plugin reports every activation (or refusal) to the bundle service, which lists
them on ``GET /replicas``. With the compiled policy the webhook's workers decide and report
instead, one ``POD/PID`` each (:mod:`.worker_status`). A deploy waits until at least
``replicas`` replicas serve the new revision: an OPA instance by its last report, a webhook
pod when every worker of it heard from in the last :data:`WORKER_STALE` seconds does (any
worker may answer the API server); an instance that refused the revision reports why.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from ..errors import PolicyEngineUnavailable


async def replica_states(bundle_url: str) -> list[dict[str, Any]]:
    """What the bundle service last heard from each OPA instance."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        async with session.get(f"{bundle_url.rstrip('/')}/replicas") as resp:
            resp.raise_for_status()
            states: list[dict[str, Any]] = await resp.json()
            return states


#: Seconds of silence after which a webhook worker counts as gone (workers report every 10 s).
WORKER_STALE = 30.0


def _is_worker(state: dict[str, Any]) -> bool:
    """A compiled-policy worker's report (``POD/PID`` id), not an OPA instance's."""
    return "/" in str(state.get("id", ""))


def _live_workers(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers heard from in the last :data:`WORKER_STALE` seconds (a silent one is gone)."""
    return [s for s in states if _is_worker(s) and float(s.get("age", 0.0)) <= WORKER_STALE]


def switched_replicas(states: list[dict[str, Any]], revision: str) -> int:
    """How many replicas serve ``revision`` (pure): OPA instances (ids without ``/``) by
    their last report, webhook pods (``POD/PID`` ids) when every recent worker does."""
    count = sum(1 for s in states if not _is_worker(s) and s.get("revision") == revision)
    pods: dict[str, list[dict[str, Any]]] = {}
    for state in _live_workers(states):
        pods.setdefault(str(state["id"]).split("/", 1)[0], []).append(state)
    return count + sum(1 for workers in pods.values() if all(w.get("revision") == revision for w in workers))


def workers_behind(states: list[dict[str, Any]], revision: str) -> list[dict[str, Any]]:
    """The live workers (:func:`_live_workers`) that do not serve ``revision`` (pure)."""
    return [s for s in _live_workers(states) if s.get("revision") != revision]


async def wait_workers(bundle_url: str, revision: str, *, timeout: float = 15.0) -> float:
    """Seconds until every live worker of ``bundle_url`` serves ``revision`` (none: at once).

    The embedded hub deciding with the compiled policy is such a worker: a deploy returns
    only once the hub's next spawn is decided by the new revision. PolicyEngineUnavailable
    past ``timeout``, naming each worker behind and why.
    """
    start = time.monotonic()
    while True:
        try:
            behind = workers_behind(await replica_states(bundle_url), revision)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PolicyEngineUnavailable(f"the bundle service at {bundle_url} could not be asked: {exc}") from exc
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise PolicyEngineUnavailable(f"not every worker deciding with the compiled policy activated {revision} "
                                          f"within {timeout:g}s ({_listing(behind)})")
        await asyncio.sleep(0.1)


def _listing(states: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s.get('id', '?')}: {s.get('revision') or 'none'}" + (f" ({s['error']})" if s.get("error") else "")
                     for s in states)


async def wait_replicas(bundle_url: str, revision: str, *, replicas: int = 1, timeout: float = 15.0) -> float:
    """Seconds until ``replicas`` replicas serve ``revision``; PolicyEngineUnavailable past timeout."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    start = time.monotonic()
    states: list[dict[str, Any]] = []
    while True:
        try:
            states = await replica_states(bundle_url)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            states = []
        if switched_replicas(states, revision) >= replicas:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            seen = _listing(states) or "no OPA has reported"
            raise PolicyEngineUnavailable(f"fewer than {replicas} replicas activated {revision} within {timeout:g}s ({seen})")
        await asyncio.sleep(0.2)
