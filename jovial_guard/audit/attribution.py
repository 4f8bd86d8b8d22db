"""Attribute an audit event to a hub user and server.

Order of evidence, strongest first: the ``hub.jupyter.org/username`` label the spawner put
on the pod/container (reported by Falco or the engine), then the spawn registry by
container id, container name, or pod. An event nothing matches is kept with
``attribution: "unattributed"`` and ``user: null`` — never guessed from names.
"""

from __future__ import annotations

from typing import Any

from .events import SERVERNAME_LABEL, USERNAME_LABEL
from .registry import SpawnRegistry


class Attributor:
    def __init__(self, registry: SpawnRegistry | None) -> None:
        self.registry = registry

    def attribute(self, event: dict[str, Any]) -> dict[str, Any]:
        """Fill ``user``, ``server`` and ``attribution`` in place (and return the event)."""
        if event.get("attribution") and event.get("user"):
            return event
        labels = event.get("labels") or {}
        user = labels.get(USERNAME_LABEL)
        if user:
            event["user"] = user
            event["server"] = labels.get(SERVERNAME_LABEL, "")
            event["attribution"] = "label"
            return event
        if self.registry is not None:
            owner = self.registry.lookup(
                container_id=event.get("container_id"),
                container_name=event.get("container_name"),
                pod=event.get("pod"),
                namespace=event.get("namespace"),
            )
            if owner is not None:
                event["user"] = owner.user
                event["server"] = owner.server
                event["attribution"] = "registry"
                return event
        event.setdefault("user", None)
        event.setdefault("server", None)
        event["attribution"] = "unattributed"
        return event
