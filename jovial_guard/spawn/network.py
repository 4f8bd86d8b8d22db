"""Per-user egress namespaces for spawned containers (an adapter over hardening.egress).

Why an adapter: the hook plans a user's namespace from the decision's Egress with the hub
rule added, applies that plan, and removes it at stop, always naming it through
:func:`~jovial_guard.hardening.netns_names.namespace_key` of the raw hub user name: the one
naming function the dashboard, the audit and the tests use too.
"""

from __future__ import annotations

from ..decision import Egress
from ..errors import JovialGuardError
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces, NamespaceHandle, NamespacePlan
from ..hardening.egress_spares import SparePool
from ..hardening.netns_names import namespace_key

__all__ = ["NetworkUnavailable", "UserNetworks", "namespace_key"]


class NetworkUnavailable(JovialGuardError):
    """The user's egress namespace could not be created; the spawn is refused."""


class UserNetworks:
    """Plan, apply and remove users' namespaces behind one project router namespace."""

    def __init__(self, *, prefix: str = "jg", pool: str = DEFAULT_POOL, hub_port: int,
                 spares: int = 0) -> None:
        self.namespaces = EgressNamespaces(prefix, pool=pool)
        self.hub_port = hub_port
        self.spares = SparePool(self.namespaces, spares)
        #: Spawns that took a spare namespace, and those that found none and made one.
        self.spare_hits = 0
        self.spare_misses = 0

    @property
    def hub_address(self) -> str:
        """Where the hub listens and every user namespace reaches it."""
        return self.namespaces.hub_address

    def ensure_router(self) -> None:
        self.namespaces.ensure_router()

    def start_spares(self) -> None:
        """Keep spare namespaces ready from now on (a background thread refills them)."""
        self.spares.start()

    def plan(self, username: str, egress: Egress) -> NamespacePlan:
        """The namespace hub user ``username`` gets for ``egress`` (pure)."""
        return self.namespaces.plan(namespace_key(username), egress,
                                    hub_addresses=[self.namespaces.hub_rule(self.hub_port)])

    def apply(self, plan: NamespacePlan) -> NamespaceHandle:
        try:
            handle = self.namespaces.apply(plan)
        finally:
            self.spares.kick()
        if handle.spare:
            self.spare_hits += 1
        else:
            self.spare_misses += 1
        return handle

    def discard(self, name: str) -> None:
        self.namespaces.discard(name)

    def destroy(self, username: str) -> None:
        self.namespaces.destroy(namespace_key(username))

    def rules(self, username: str) -> str:
        return self.namespaces.live_ruleset(username)
