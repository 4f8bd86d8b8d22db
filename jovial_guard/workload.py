"""`Workload`: the one normalized thing every policy decision is about.

Both enforcement points build a Workload: the JupyterHub pre-spawn hook describes the
container DockerSpawner is about to start as a pod spec, the admission webhook takes the
pod (or the pod template of a workload object) from the AdmissionReview. The Rego in
``policies/`` therefore reads one shape, ``input.workload``, and nothing downstream needs
to know which entry point a workload came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Origin = Literal["spawn", "admission", "check"]

#: The three places a Kubernetes pod spec lists containers. Every one is decided.
CONTAINER_KINDS: tuple[str, ...] = ("containers", "initContainers", "ephemeralContainers")


@dataclass(frozen=True)
class HubUser:
    """The JupyterHub user a workload runs for (unknown users get ``None`` upstream)."""

    name: str
    groups: tuple[str, ...] = ()
    admin: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "groups": sorted(self.groups), "admin": self.admin}


@dataclass(frozen=True)
class ContainerRef:
    """Where one container sits in the pod spec, so patches can address it."""

    kind: str
    index: int
    name: str
    image: str

    @property
    def pointer(self) -> str:
        """JSON pointer of the container relative to the pod (``/spec/containers/0``)."""
        return f"/spec/{self.kind}/{self.index}"


@dataclass(frozen=True)
class Workload:
    """A pod (or pod template) under decision, with who it runs for.

    ``pod`` is ``{"metadata": ..., "spec": ...}``; ``pod_path`` is the JSON pointer of that
    pod inside the original object ("" for a Pod, ``/spec/template`` for a Deployment,
    ``/spec/jobTemplate/spec/template`` for a CronJob), so a patch rendered against the pod
    can be re-rooted onto the object the API server sent.
    """

    origin: Origin
    kind: str
    name: str
    namespace: str
    pod: dict[str, Any]
    pod_path: str = ""
    user: HubUser | None = None
    profile: str | None = None
    operation: str = "CREATE"
    request_user: str | None = None
    request_groups: tuple[str, ...] = ()
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: Labels of the workload's namespace (they may set enforcement modes); empty when
    #: the caller does not read them (the spawn hook, a webhook without namespace lookup).
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.pod.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = self.pod.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    def containers(self) -> list[ContainerRef]:
        """Every container of every kind, in pod-spec order."""
        refs: list[ContainerRef] = []
        for kind in CONTAINER_KINDS:
            for index, container in enumerate(self.spec.get(kind) or []):
                if isinstance(container, dict):
                    refs.append(
                        ContainerRef(
                            kind=kind,
                            index=index,
                            name=str(container.get("name", "")),
                            image=str(container.get("image", "")),
                        )
                    )
        return refs

    def to_input(self) -> dict[str, Any]:
        """The OPA ``input`` document. The only wire format the Rego sees."""
        return {
            "workload": {
                "origin": self.origin,
                "kind": self.kind,
                "name": self.name,
                "namespace": self.namespace,
                "operation": self.operation,
                "user": self.user.to_json() if self.user else None,
                "profile": self.profile,
                "request_user": self.request_user,
                "request_groups": sorted(self.request_groups),
                "pod": self.pod,
                "extra": self.extra,
                "namespace_labels": self.namespace_labels,
            }
        }

    def digest(self) -> str:
        """A stable digest of the decision input, for caches and the decision log.

        ``dry_run`` is deliberately not part of it: it changes side effects, not the answer.
        """
        canonical = json.dumps(self.to_input(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
