"""Per-user egress namespaces for spawned containers (a thin adapter over hardening.egress).

Why an adapter: the hook needs three things from the egress module (create a user's
namespace from the decision's Egress, know the address the hub reaches the container on,
destroy it at stop) and a stable name per user. Namespace names are derived from the user
name plus a short digest, so two user names never share a namespace and long names fit
the kernel's interface-name limits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..decision import Egress
from ..errors import JovialGuardError

_SAFE = re.compile(r"[^a-z0-9]")


class NetworkUnavailable(JovialGuardError):
    """The user's egress namespace could not be created; the spawn is refused."""


@dataclass(frozen=True)
class UserNetwork:
    """What the spawner needs: the engine's network mode and the container's address."""

    name: str
    network_mode: str
    container_address: str


def namespace_name(prefix: str, username: str) -> str:
    """``jg-alice-1a2b3c``: readable, unique per user name, short."""
    digest = hashlib.sha256(username.encode()).hexdigest()[:6]
    safe = _SAFE.sub("", username.lower())[:8]
    return f"{prefix}{safe}-{digest}" if safe else f"{prefix}{digest}"


class UserNetworks:
    """Create and destroy users' namespaces through :mod:`jovial_guard.hardening.egress`."""

    def __init__(self, *, prefix: str, hub_ip: str, hub_port: int) -> None:
        from ..hardening import egress as egress_module

        self._module = egress_module
        self.prefix = prefix
        self.hub_ip = hub_ip
        self.hub_port = hub_port
        self._namespaces = egress_module.EgressNamespaces()

    def name_for(self, username: str) -> str:
        return namespace_name(self.prefix, username)

    def create(self, username: str, egress: Egress) -> UserNetwork:
        name = self.name_for(username)
        try:
            self._namespaces.destroy(name)  # a leftover from a crashed run
        except Exception:  # noqa: BLE001 - nothing to clean is fine
            pass
        try:
            handle = self._namespaces.create(
                name, egress, hub_addresses=[f"{self.hub_ip}:{self.hub_port}"]
            )
        except JovialGuardError as exc:
            raise NetworkUnavailable(str(exc)) from exc
        address = str(getattr(handle, "container_address", "") or getattr(handle, "address", ""))
        if not address:
            self._namespaces.destroy(name)
            raise NetworkUnavailable(f"namespace {name} has no container address")
        return UserNetwork(name=name, network_mode=f"ns:{handle.path}", container_address=address)

    def destroy(self, username: str) -> None:
        self._namespaces.destroy(self.name_for(username))
