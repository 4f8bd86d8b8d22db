"""Fill the spawn registry from JupyterHub itself: on a server ``start`` event, ask the Hub
REST API for the server's spawner state (DockerSpawner keeps ``container_id``/``object_id``,
KubeSpawner the pod name) and register it; on ``stop``, mark it stopped.

Needs a hub token with the ``admin:server_state`` and ``read:users`` scopes. This is what
attributes engine events of hub-spawned containers, which carry no user labels.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import Misconfigured, Unavailable
from .registry import Owner, SpawnRegistry

#: How the spawn hook joins a container to its egress namespace (render_docker).
NETNS_MODE_PREFIX = "ns:/run/netns/"

log = logging.getLogger(__name__)


def owner_from_state(state: dict[str, Any]) -> dict[str, str | None]:
    """Container / pod identity from a spawner's persisted state (pure)."""
    return {
        "container_id": state.get("container_id") or state.get("object_id") or None,
        "container_name": state.get("object_name") or state.get("container_name") or None,
        "pod": state.get("pod_name") or None,
        "namespace": state.get("namespace") or None,
    }


def register_spawner(registry: SpawnRegistry, spawner: Any, *, netns: str | None = None) -> None:
    """Register a started spawner (DockerSpawner, KubeSpawner, ...) from its own state.

    For the spawn hook / spawner subclass, right after ``start()``::

        register_spawner(registry, self, netns=handle.name)
    """
    ids = owner_from_state(spawner.get_state() or {})
    if not (ids["container_id"] or ids["container_name"] or ids["pod"]):
        raise ValueError("the spawner's state names no container or pod yet; call after start()")
    registry.register(user=spawner.user.name, server=spawner.name or "", netns=netns,
                      container_id=ids["container_id"], container_name=ids["container_name"],
                      pod=ids["pod"], namespace=ids["namespace"])


class SpawnRegistrar:
    """A JovialGuard spawn listener that registers each admitted spawn, before it starts.

    In jupyterhub_config.py::

        from jovial_guard.audit.hub_registry import SpawnRegistrar
        c.JovialGuard.spawn_listeners = [SpawnRegistrar("/var/lib/jovial-guard/audit/spawns.sqlite")]

    DockerSpawner names its container before starting it (``object_name``), KubeSpawner its
    pod (``pod_name``), so engine and Falco events are attributed from the very first one
    (``create``/``start``); the user's egress namespace (``network_mode`` of the hardening
    record) is registered too, for ``cut_network``.
    """

    def __init__(self, registry: SpawnRegistry | str | Path) -> None:
        self.registry = registry if isinstance(registry, SpawnRegistry) else SpawnRegistry(registry)

    def __deepcopy__(self, memo: dict[int, Any]) -> SpawnRegistrar:
        """The registrar itself: traitlets deep-copies config values (a
        ``c.JovialGuard.spawn_listeners`` entry) and the registry's lock cannot be copied."""
        return self

    def __call__(self, spawner: Any, record: dict[str, Any]) -> None:
        mode = str((record.get("hardening") or {}).get("network_mode") or "")
        netns = mode[len(NETNS_MODE_PREFIX):] if mode.startswith(NETNS_MODE_PREFIX) else None
        pod = getattr(spawner, "pod_name", None)
        container_name = None if pod else getattr(spawner, "object_name", None)
        self.registry.register(
            user=spawner.user.name, server=spawner.name or "",
            container_name=str(container_name) if container_name else None,
            pod=str(pod) if pod else None,
            namespace=str(getattr(spawner, "namespace", "") or "") or None if pod else None,
            netns=netns, record=record,
        )


async def register_from_hub(registry: SpawnRegistry, *, api_url: str, token: str, user: str,
                            server: str = "", netns: str | None = None,
                            timeout: float = 10.0) -> Owner | None:
    """Look up ``user``'s ``server`` in the Hub API and register its container. None if unknown."""
    url = f"{api_url.rstrip('/')}/users/{quote(user, safe='')}"
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=headers) as session:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise Unavailable(f"hub answered {resp.status} for user {user}")
            model = await resp.json()
    server_model = (model.get("servers") or {}).get(server)
    if not isinstance(server_model, dict):
        return None
    state = server_model.get("state")
    if not isinstance(state, dict):
        raise Misconfigured("the hub token lacks admin:server_state (no spawner state in the user model)")
    ids = owner_from_state(state)
    if not (ids["container_id"] or ids["container_name"] or ids["pod"]):
        return None
    await asyncio.to_thread(registry.register, user=user, server=server, netns=netns,
                            container_id=ids["container_id"], container_name=ids["container_name"],
                            pod=ids["pod"], namespace=ids["namespace"])
    return registry.lookup(container_id=ids["container_id"], container_name=ids["container_name"],
                           pod=ids["pod"], namespace=ids["namespace"])


class HubRegistrar:
    """AuditService observer: hub start -> register from the Hub API; stop -> mark stopped."""

    def __init__(self, registry: SpawnRegistry, *, api_url: str, token: str) -> None:
        self.registry = registry
        self.api_url = api_url
        self.token = token
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, event: dict[str, Any], seq: int) -> None:
        if event.get("kind") != "hub" or not event.get("user"):
            return
        user, server = str(event["user"]), str(event.get("server") or "")
        if event.get("rule") == "server start":
            task = asyncio.get_running_loop().create_task(self._register(user, server))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif event.get("rule") == "server stop":
            self.registry.mark_stopped(user=user, server=server)

    async def _register(self, user: str, server: str) -> None:
        try:
            await register_from_hub(self.registry, api_url=self.api_url, token=self.token, user=user, server=server)
        except Exception:  # attribution degrades to 'unattributed', never blocks intake
            log.exception("could not register %s/%s from the hub", user, server)
