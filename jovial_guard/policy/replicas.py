"""Wait until the webhook replicas' OPAs activated a revision, as the bundle service saw it.

Each replica's OPA listens on loopback inside its pod, out of a policy admin's reach; its
status plugin reports every activation (or refusal) to the bundle service, which lists
them on ``GET /replicas``. A deploy waits until at least ``replicas`` OPA instances report
the new revision; an instance that refused it reports why.
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


async def wait_replicas(bundle_url: str, revision: str, *, replicas: int = 1, timeout: float = 15.0) -> float:
    """Seconds until ``replicas`` OPA instances report ``revision``; PolicyEngineUnavailable past timeout."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    start = time.monotonic()
    states: list[dict[str, Any]] = []
    while True:
        try:
            states = await replica_states(bundle_url)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            states = []
        if sum(1 for s in states if s.get("revision") == revision) >= replicas:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            seen = ", ".join(f"{s.get('id', '?')[:8]}: {s.get('revision') or 'none'}" + (f" ({s['error']})" if s.get("error") else "")
                             for s in states) or "no OPA has reported"
            raise PolicyEngineUnavailable(f"fewer than {replicas} OPA replicas activated {revision} within {timeout:g}s ({seen})")
        await asyncio.sleep(0.2)
