"""Everything one admitted spawn will do, rendered from its decision before anything is done.

Why one value: the container the engine receives, the user's network namespace (its routes
and nftables text), the storage that will be mounted and the hardening record all follow from
one Decision. :func:`render_spawn` computes them together, purely (golden-tested in
``tests/vectors/spawn_plan/``); :mod:`.apply` then carries the plan out and undoes it on
failure. Nothing is created that was not rendered here, and readers (the recorder, the
dashboard, audit) read :class:`SpawnRecord` instead of string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..credentials.hub import StoragePlan
from ..decision import Decision
from ..hardening.egress import NamespacePlan
from ..hardening.render_docker import render_docker
from ..hardening.userns import IdMap


@dataclass(frozen=True)
class ContainerSettings:
    """What the DockerSpawner hands the engine: image, user, host_config, volumes, memory,
    and the user's own user namespace (``userns_mode``; None: the host's ids)."""

    image: str
    user: str
    host_config: Mapping[str, Any]
    volumes: Mapping[str, Mapping[str, str]]
    mem_limit: int
    userns_mode: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "user": self.user, "host_config": dict(self.host_config),
                "volumes": {k: dict(v) for k, v in self.volumes.items()},
                "mem_limit": self.mem_limit, "userns_mode": self.userns_mode}


@dataclass(frozen=True)
class SpawnRecord:
    """What was decided and applied for one spawn: the hardening record readers use.

    ``to_json`` is the document spawn listeners receive and the recorder stores;
    :meth:`from_json` reads it back, typed.
    """

    decision_id: str
    policy_revision: str
    profile: str
    image: str
    warnings: tuple[str, ...]
    hardening: Mapping[str, Any]
    netns: str | None
    #: The enforcement mode that acted on the decision (enforce, warn, audit or none).
    mode: str = "none"
    container_address: str = ""
    storage: Mapping[str, Any] | None = None
    hook_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision_id": self.decision_id,
            "policy_revision": self.policy_revision,
            "profile": self.profile,
            "image": self.image,
            "warnings": list(self.warnings),
            "hardening": dict(self.hardening),
            "netns": self.netns,
            "mode": self.mode,
            "container_address": self.container_address,
        }
        if self.storage is not None:
            out["storage"] = dict(self.storage)
        if self.hook_ms is not None:
            out["hook_ms"] = self.hook_ms
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SpawnRecord:
        """A stored record; raises ValueError naming what is missing or malformed."""
        try:
            hook_ms = doc.get("hook_ms")
            return cls(
                decision_id=str(doc["decision_id"]),
                policy_revision=str(doc["policy_revision"]),
                profile=str(doc["profile"]),
                image=str(doc.get("image", "")),
                warnings=tuple(str(w) for w in doc.get("warnings", [])),
                hardening=dict(doc["hardening"]),
                netns=str(doc["netns"]) if doc.get("netns") else None,
                mode=str(doc.get("mode", "none")),
                container_address=str(doc.get("container_address", "")),
                storage=dict(doc["storage"]) if doc.get("storage") else None,
                hook_ms=float(hook_ms) if hook_ms is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a spawn record: {exc!r}") from exc


@dataclass(frozen=True)
class SpawnPlan:
    """The whole spawn, rendered: container settings, namespace plan, storage plan, record."""

    container: ContainerSettings
    network: NamespacePlan | None
    storage: StoragePlan | None
    record: SpawnRecord

    def to_json(self) -> dict[str, Any]:
        """The golden form: every byte the engine, ``nft`` and the storage agent receive."""
        return {
            "container": self.container.to_json(),
            "network": None if self.network is None else {
                "name": self.network.name, "network_mode": self.network.network_mode,
                "routes": list(self.network.routes), "ruleset": self.network.ruleset},
            "storage": None if self.storage is None else self.storage.to_json(),
            "record": self.record.to_json(),
        }


def render_spawn(
    decision: Decision,
    *,
    image: str,
    seccomp_path: str,
    apparmor_supported: bool,
    network: NamespacePlan | None,
    storage: StoragePlan | None,
    home_volume: str,
    tmpfs_size: str,
    userns: IdMap | None = None,
) -> SpawnPlan:
    """The plan for an *allowed* ``decision`` (pure). ``network`` None: no network at all;
    ``userns`` None: the container keeps the host's ids.

    Raises :class:`~jovial_guard.hardening.render_docker.UnrenderableSpec` when the spec
    cannot be rendered (the hook refuses the spawn) and ValueError for a denied decision.
    """
    spec = decision.spec
    if not decision.allowed or spec is None:
        raise ValueError("only an allowed decision with a spec can be rendered")
    rendered = render_docker(
        spec,
        seccomp_path=seccomp_path,
        apparmor_supported=apparmor_supported,
        network_mode=network.network_mode if network is not None else "none",
        home_volume=home_volume,
        tmpfs_size=tmpfs_size,
        storage_volume=storage.volume if storage is not None else None,
        userns=userns,
    )
    container = ContainerSettings(image=image, user=rendered["user"],
                                  host_config=rendered["host_config"], volumes=rendered["volumes"],
                                  mem_limit=rendered["mem_limit"], userns_mode=rendered["userns_mode"])
    record = SpawnRecord(
        decision_id=decision.decision_id,
        policy_revision=decision.policy_revision,
        profile=spec.profile,
        image=image,
        warnings=tuple(decision.warnings),
        hardening=rendered["hardening"],
        netns=network.name if network is not None else None,
        mode=decision.mode,
    )
    return SpawnPlan(container=container, network=network, storage=storage, record=record)
