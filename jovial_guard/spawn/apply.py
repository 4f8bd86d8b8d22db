"""Carry out a rendered :class:`~.plan.SpawnPlan`, all of it or none of it.

Why one step: a spawn makes a network namespace, mounts storage and configures the spawner.
Under one :class:`contextlib.AsyncExitStack` every step registers its own undo as it
succeeds, so a failure anywhere undoes exactly what was done, in reverse order, and the
spawner is configured only once everything else stands. The namespace and the storage
grant are independent and made at the same time (the spawn waits for the slower one). Blocking work (netlink, ``nft``,
mounts) runs in worker threads, never on the hub's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from ..credentials.hub import StoragePlan
from ..errors import JovialGuardError
from ..hardening.egress import NamespaceHandle, NamespacePlan
from .plan import ContainerSettings, SpawnPlan, SpawnRecord
from .steps import StepClock

#: Namespace work waits for one lock anyway: two threads of its own keep a spawn storm from
#: filling the event loop's default executor, which other hub work needs.
_NETWORK_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jovial-guard-netns")
_T = TypeVar("_T")


async def in_network_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` on the namespace worker threads, awaited without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(_NETWORK_THREADS, fn, *args)


class ApplyFailed(JovialGuardError):
    """One step of applying a plan failed (``step``: ``network`` or ``storage``); every
    step done before it has been undone."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause


class NamespaceApplier(Protocol):
    """The part of :class:`~jovial_guard.hardening.egress.EgressNamespaces` a spawn uses."""

    def apply(self, plan: NamespacePlan) -> NamespaceHandle: ...

    def discard(self, name: str) -> None: ...


class StorageAttacher(Protocol):
    """The part of :class:`~jovial_guard.credentials.hub.StorageCredentials` a spawn uses."""

    async def attach_planned(self, plan: StoragePlan) -> dict[str, Any]: ...

    async def detach(self, *, user: str, reason: str = ...) -> list[str]: ...


async def apply_plan(
    plan: SpawnPlan,
    spawner: Any,
    *,
    networks: NamespaceApplier | None,
    storage: StorageAttacher | None,
    steps: StepClock | None = None,
) -> SpawnRecord:
    """Make the namespace, mount the storage, configure ``spawner``; the applied record.

    Raises ApplyFailed (after undoing every finished step) when a step fails.
    """
    if plan.network is not None and networks is None:
        raise ApplyFailed("network", ValueError("the plan has a namespace but egress is off"))
    if plan.storage is not None and storage is None:
        raise ApplyFailed("storage", ValueError("the plan has storage but storage is off"))
    async with AsyncExitStack() as undo:
        # The namespace and the storage grant do not depend on each other: both run at
        # once, and whichever succeeded is undone if the other failed.
        clock = steps or StepClock()
        network_step = (_timed(clock, "network", in_network_thread(networks.apply, plan.network))
                        if plan.network is not None and networks is not None else _nothing())
        storage_step = (_timed(clock, "storage", storage.attach_planned(plan.storage))
                        if plan.storage is not None and storage is not None else _nothing())
        handle, storage_record = await asyncio.gather(network_step, storage_step,
                                                      return_exceptions=True)
        address = ""
        hardening = dict(plan.record.hardening)
        if plan.network is not None and networks is not None and not isinstance(handle, BaseException):
            undo.push_async_callback(in_network_thread, networks.discard, plan.network.name)
            address = handle.address
            # What the kernel holds right after loading: the attestation's reference.
            hardening["ruleset_digest"] = handle.ruleset_digest
        if plan.storage is not None and storage is not None and not isinstance(storage_record, BaseException):
            undo.push_async_callback(_detach, storage, plan.storage.user)
        for step, outcome in (("network", handle), ("storage", storage_record)):
            if isinstance(outcome, (JovialGuardError, OSError)):
                raise ApplyFailed(step, outcome) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
        configure_spawner(spawner, plan.container, address=address)
        undo.pop_all()
    return replace(plan.record, container_address=address, hardening=hardening,
                   storage=storage_record if isinstance(storage_record, dict) else None)


async def _nothing() -> None:
    return None


async def _timed(clock: StepClock, name: str, step: Awaitable[_T]) -> _T:
    with clock.step(name):
        return await step


async def _detach(storage: StorageAttacher, user: str) -> None:
    await storage.detach(user=user, reason="spawn failed")


def configure_spawner(spawner: Any, container: ContainerSettings, *, address: str) -> None:
    """Set the rendered settings on a (Guarded)DockerSpawner, replacing, not merging."""
    spawner.image = container.image
    spawner.guard_image = container.image
    spawner.extra_host_config = dict(container.host_config)
    create: dict[str, Any] = {"user": container.user}
    if container.userns_mode is not None:
        # Raw HostConfig field: DockerSpawner deep-merges it with the host_config it builds.
        create["host_config"] = {"UsernsMode": container.userns_mode}
    spawner.extra_create_kwargs = create
    spawner.volumes = {k: dict(v) for k, v in container.volumes.items()}
    spawner.read_only_volumes = {}
    spawner.mounts = []
    spawner.mem_limit = container.mem_limit
    spawner.cpu_limit = None  # nano_cpus in host_config; cpu_quota as well would conflict
    spawner.use_internal_ip = True  # no host port bindings: the hub reaches the namespace
    spawner.guard_address = address
    spawner.guard_hardened = True
