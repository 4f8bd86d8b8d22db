"""The values the egress namespaces hand out: what a spawn joins, what a plan holds, what the
query API reports. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .netns import path_of


@dataclass(frozen=True)
class NamespaceHandle:
    """A user's namespace: what the engine joins (``network_mode``) and where it lives."""

    name: str
    path: str
    address: str
    gateway: str
    #: The kernel's ruleset right after loading (:mod:`.egress_digest`); attestation compares.
    ruleset_digest: str = ""
    #: Whether a spare namespace was taken (else it was made during the spawn).
    spare: bool = False
    #: Whether that spare already held this plan's routes and rules (only renamed).
    prepared: bool = False

    @property
    def network_mode(self) -> str:
        return f"ns:{self.path}"


@dataclass(frozen=True)
class ServiceHandle:
    """A service namespace attached to the router (a data service or a test host)."""

    name: str
    path: str
    address: str


@dataclass(frozen=True)
class NamespacePlan:
    """Everything one user namespace will be, decided before anything is made (pure).

    The address and router link are chosen when the plan is carried out (they depend on
    which links are free); everything the decision controls is here.
    """

    name: str
    routes: tuple[str, ...]
    ruleset: str

    @property
    def path(self) -> str:
        return str(path_of(self.name))

    @property
    def network_mode(self) -> str:
        return f"ns:{self.path}"


@dataclass(frozen=True)
class UserNamespace:
    """What the query API reports about a user's live namespace."""

    name: str
    path: str
    address: str
    gateway: str
    router_link: str
