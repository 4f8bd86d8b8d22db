"""Work a hub does once at start, so that no spawn pays for it.

Why: the first spawns of a storm arrive while the hub serves every user's request at once;
whatever they open first (the policy connection, the storage issuer and node agent) then
takes as long as the hub's busy event loop makes it. Opened at start, a spawn only uses
them. A failure here is only logged: the spawn that needs the piece meets it again and is
refused with the reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .guard import JovialGuard

_tasks: set[asyncio.Task[None]] = set()


def warm_storage(guard: JovialGuard) -> None:
    """Open the storage issuer and node agent now (keys, backend mounts, the sweep of a
    previous run's mounts)."""
    from ..credentials.hub import StorageCredentials

    try:
        storage = StorageCredentials.instance(config=guard.config, log=guard.log)
        storage.issuer, storage.agent  # noqa: B018 - opened on first use
    except Exception as exc:  # noqa: BLE001 - reported again by the spawn that needs it
        guard.log.warning("jovial_guard: storage credentials could not be opened at start-up: %s", exc)


def warm_policy_soon(guard: JovialGuard) -> None:
    """Open the policy connection and ask OPA for its revision on the hub's event loop, as
    soon as it runs (JupyterHub loads its configuration on that loop); nothing without one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(_warm_policy(guard))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _warm_policy(guard: JovialGuard) -> None:
    try:
        revision = await (await guard.engine()).revision()
        guard.log.info("jovial_guard: policy connection open (revision %s)", revision)
    except Exception as exc:  # noqa: BLE001 - the first spawn opens it again, or is refused
        guard.log.warning("jovial_guard: the policy connection could not be opened at start-up: %s", exc)
