"""Per-user egress namespaces for spawned containers (an adapter over hardening.egress).

Why an adapter: the hook needs three things from the egress module (create a user's
namespace from the decision's Egress with the hub rule added, know the address the hub
reaches the container on, destroy it at stop) and a stable, valid namespace name per hub
user. Names are the user name's safe characters plus a short digest of the full name, so
two user names never share a namespace and every name fits the kernel's limits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..decision import Egress
from ..errors import JovialGuardError
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces

_SAFE = re.compile(r"[^a-z0-9]")


class NetworkUnavailable(JovialGuardError):
    """The user's egress namespace could not be created; the spawn is refused."""


@dataclass(frozen=True)
class UserNetwork:
    """What the spawner needs: the engine's network mode and the container's address."""

    name: str
    network_mode: str
    container_address: str


def namespace_key(username: str) -> str:
    """``alice-1a2b3c``: readable, unique per user name, valid for EgressNamespaces."""
    digest = hashlib.sha256(username.encode()).hexdigest()[:8]
    safe = _SAFE.sub("", username.lower())[:24]
    return f"{safe}-{digest}" if safe else digest


class UserNetworks:
    """Create and destroy users' namespaces behind one project router namespace."""

    def __init__(self, *, prefix: str = "jg", pool: str = DEFAULT_POOL, hub_port: int) -> None:
        self.namespaces = EgressNamespaces(prefix, pool=pool)
        self.hub_port = hub_port

    @property
    def hub_address(self) -> str:
        """Where the hub listens and every user namespace reaches it."""
        return self.namespaces.hub_address

    def ensure_router(self) -> None:
        self.namespaces.ensure_router()

    def create(self, username: str, egress: Egress) -> UserNetwork:
        key = namespace_key(username)
        try:
            handle = self.namespaces.create(
                key, egress, hub_addresses=[self.namespaces.hub_rule(self.hub_port)]
            )
        except JovialGuardError as exc:
            raise NetworkUnavailable(str(exc)) from exc
        return UserNetwork(name=handle.name, network_mode=handle.network_mode,
                           container_address=handle.address)

    def destroy(self, username: str) -> None:
        self.namespaces.destroy(namespace_key(username))

    def rules(self, username: str) -> str:
        return self.namespaces.rules(namespace_key(username))
