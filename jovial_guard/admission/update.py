"""What an UPDATE changes, so it is decided the way Pod Security admission decides it.

Pod Security ignores updates that change only a pod's metadata, and judges
``pods/ephemeralcontainers`` and ``pods/resize`` against the stored pod. The webhook does
the same:

* a Pod UPDATE that changes neither the spec nor any label or annotation (finalizers,
  ownerReferences, ...) is admitted without asking the policy at all;
* a Pod UPDATE that changes labels or annotations but not the spec is decided as
  ``metadata_only``: the policy judges only the identity-bearing metadata it introduces;
* every other UPDATE is decided in full, with the stored object's metadata and spec
  beside it (``extra.old_metadata``, ``extra.old_spec``), so the pod's owner (the hub user
  its unchanged annotations name) is kept and only what the update introduces is judged
  against the requester.

Pure functions over the AdmissionReview request; no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..workload import Workload

UpdateKind = Literal["create", "unchanged-metadata", "metadata-only", "full"]

#: Annotations that change how a container is confined: a change to one is decided in full
#: (Pod Security treats an AppArmor annotation change as significant too).
CONFINEMENT_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)


def _pod_at(obj: Any, pod_path: str) -> dict[str, Any] | None:
    node = obj
    for part in [p for p in pod_path.split("/") if p]:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node if isinstance(node, dict) else None


def _meta(pod: dict[str, Any], key: str) -> dict[str, Any]:
    """Labels or annotations of a stored object; anything but a map counts as none."""
    metadata = pod.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, dict) else {}


def classify(request: dict[str, Any], workload: Workload) -> UpdateKind:
    """How this request is to be decided (see the module docstring)."""
    if workload.operation != "UPDATE":
        return "create"
    old = _pod_at(request.get("oldObject"), workload.pod_path)
    if old is None:
        return "full"
    if workload.kind != "Pod" or request.get("subResource"):
        return "full"
    if old.get("spec") != workload.spec:
        return "full"
    old_annotations = _meta(old, "annotations")
    new_annotations = workload.metadata.get("annotations") or {}
    confinement = {k for k in {*old_annotations, *new_annotations} if k.startswith(CONFINEMENT_ANNOTATION_PREFIXES)}
    if any(old_annotations.get(k) != new_annotations.get(k) for k in confinement):
        return "full"
    same_labels = _meta(old, "labels") == (workload.metadata.get("labels") or {})
    same_annotations = old_annotations == new_annotations
    return "unchanged-metadata" if same_labels and same_annotations else "metadata-only"


def with_stored_object(request: dict[str, Any], workload: Workload, kind: UpdateKind) -> Workload:
    """The workload with what the policy needs to judge an UPDATE against the stored object."""
    if kind == "create":
        return workload
    old = _pod_at(request.get("oldObject"), workload.pod_path) or {}
    extra = {
        **workload.extra,
        "old_metadata": {"labels": _meta(old, "labels"), "annotations": _meta(old, "annotations")},
        "old_spec": old.get("spec") if isinstance(old.get("spec"), dict) else {},
        "subresource": str(request.get("subResource") or ""),
        "metadata_only": kind == "metadata-only",
    }
    return dataclasses.replace(workload, extra=extra)
