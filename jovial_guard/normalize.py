"""Normalizers: Kubernetes objects and AdmissionReviews in, :class:`Workload` out.

Every workload kind that carries a pod template is supported, so a Deployment that would
create a privileged pod is refused at the Deployment, not only when its pods appear.
Malformed input raises :class:`~jovial_guard.errors.MalformedInput` naming the problem; it
never produces a Workload that looks harmless because fields were missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .constants import ADMIN_ANNOTATION, GROUPS_ANNOTATION, PROFILE_ANNOTATION
from .errors import MalformedInput
from .workload import HubUser, Origin, Workload

#: kind -> JSON pointer of its pod template (Pod itself is the pod: "").
POD_TEMPLATE_PATHS: dict[str, str] = {
    "Pod": "",
    "Deployment": "/spec/template",
    "StatefulSet": "/spec/template",
    "DaemonSet": "/spec/template",
    "ReplicaSet": "/spec/template",
    "ReplicationController": "/spec/template",
    "Job": "/spec/template",
    "CronJob": "/spec/jobTemplate/spec/template",
    "PodTemplate": "/template",
}

#: Annotations the hub (KubeSpawner, or our hook) puts on a pod to say whose it is.
USERNAME_ANNOTATION = "hub.jupyter.org/username"
USERNAME_LABEL = "hub.jupyter.org/username"


class NoPodTemplate(MalformedInput):
    """The object's kind carries no pod template, so the pod policy does not apply to it.

    A caller that decides only pods (the webhook) treats it as malformed input; a caller
    that reads whole manifests (``jovial-guard check``) reports the object as not
    applicable.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"kind {kind!r} has no pod template; supported: {', '.join(sorted(POD_TEMPLATE_PATHS))}")


#: Fields Kubernetes types as booleans. The API server refuses anything else there, and a
#: YAML reader may hand over a string ("y", "on") where the cluster sees ``true``: a
#: non-bool is malformed, never read as "false".
POD_BOOL_FIELDS = ("hostNetwork", "hostPID", "hostIPC", "hostUsers", "shareProcessNamespace",
                   "automountServiceAccountToken", "enableServiceLinks", "setHostnameAsFQDN")
CONTAINER_BOOL_FIELDS = ("stdin", "stdinOnce", "tty")
SECURITY_CONTEXT_BOOL_FIELDS = ("privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot")
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _require_bools(obj: Any, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        return
    for name in fields:
        value = obj.get(name)
        if value is not None and not isinstance(value, bool):
            raise MalformedInput(f"{where}/{name} must be true or false, got {value!r}")


def _security_context(holder: dict[str, Any], where: str) -> None:
    context = holder.get("securityContext")
    if context is None:
        return
    if not isinstance(context, dict):
        raise MalformedInput(f"{where}/securityContext must be a map")
    _require_bools(context, SECURITY_CONTEXT_BOOL_FIELDS, f"{where}/securityContext")
    _require_bools(context.get("windowsOptions"), ("hostProcess",), f"{where}/securityContext/windowsOptions")


def check_bool_fields(spec: dict[str, Any], where: str) -> None:
    """Raise MalformedInput if a boolean field of a pod spec holds anything but a bool."""
    _require_bools(spec, POD_BOOL_FIELDS, where)
    _security_context(spec, where)
    for list_name in CONTAINER_LISTS:
        for i, container in enumerate(spec.get(list_name) or []):
            at = f"{where}/{list_name}/{i}"
            _require_bools(container, CONTAINER_BOOL_FIELDS, at)
            _security_context(container, at)
            for j, mount in enumerate(container.get("volumeMounts") or []):
                _require_bools(mount, ("readOnly",), f"{at}/volumeMounts/{j}")
    for i, volume in enumerate(spec.get("volumes") or []):
        for source, body in volume.items():
            _require_bools(body, ("readOnly", "optional"), f"{where}/volumes/{i}/{source}")


def _walk(obj: Any, pointer: str) -> Any:
    node = obj
    for part in [p for p in pointer.split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            raise MalformedInput(f"missing {pointer} (no '{part}')")
        node = node[part]
    return node


def _groups(raw: str | None) -> tuple[str, ...]:
    """The groups annotation: a JSON list of strings, the only form the hub sends. A
    comma-joined string is refused rather than split: a group name may contain a comma."""
    if not raw:
        return ()
    if not isinstance(raw, str) or not raw.strip().startswith("["):
        raise MalformedInput(
            f'annotation {GROUPS_ANNOTATION} must be a JSON list of group names, e.g. ["astro", "staff"]'
        )
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"annotation {GROUPS_ANNOTATION} is not a JSON list: {exc}") from exc
    if not isinstance(parsed, list) or not all(isinstance(g, str) for g in parsed):
        raise MalformedInput(f"annotation {GROUPS_ANNOTATION} must list strings")
    return tuple(parsed)


def user_from_metadata(metadata: Mapping[str, Any]) -> HubUser | None:
    """The hub user a pod claims to belong to (the policy decides whether to trust it)."""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    if not isinstance(annotations, dict) or not isinstance(labels, dict):
        raise MalformedInput("metadata.annotations and metadata.labels must be maps")
    groups = _groups(annotations.get(GROUPS_ANNOTATION))
    name = annotations.get(USERNAME_ANNOTATION) or labels.get(USERNAME_LABEL)
    if not name:
        return None
    return HubUser(
        name=str(name),
        groups=groups,
        admin=str(annotations.get(ADMIN_ANNOTATION, "")).lower() == "true",
    )


def workload_from_object(
    obj: Any,
    *,
    origin: Origin = "check",
    namespace: str | None = None,
    operation: str = "CREATE",
    request_user: str | None = None,
    request_groups: tuple[str, ...] = (),
    dry_run: bool = False,
) -> Workload:
    """A Pod or any pod-template workload object as a Workload."""
    if not isinstance(obj, dict):
        raise MalformedInput(f"expected a Kubernetes object (a map), got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise MalformedInput("not a Kubernetes object: no 'kind'")
    if kind not in POD_TEMPLATE_PATHS:
        raise NoPodTemplate(kind)
    metadata = obj.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise MalformedInput("metadata must be a map")
    pod_path = POD_TEMPLATE_PATHS[kind]
    pod = _walk(obj, pod_path) if pod_path else obj
    if not isinstance(pod, dict):
        raise MalformedInput(f"{pod_path or 'the pod'} must be a map")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise MalformedInput(f"{pod_path}/spec is missing or not a map")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise MalformedInput(f"{pod_path}/spec/containers must be a non-empty list")
    for list_name in ("containers", "initContainers", "ephemeralContainers", "volumes"):
        value = spec.get(list_name)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(c, dict) for c in value)
        ):
            raise MalformedInput(f"{pod_path}/spec/{list_name} must be a list of maps")
    check_bool_fields(spec, f"{pod_path}/spec")
    pod_metadata = pod.get("metadata")
    pod_metadata = {} if pod_metadata is None else pod_metadata
    if not isinstance(pod_metadata, dict):
        raise MalformedInput(f"{pod_path}/metadata must be a map")
    # The pod template inherits nothing from the workload's metadata for identity; but a
    # bare template often lacks a namespace, so fall back to the object's.
    merged_meta = {**pod_metadata}
    annotations = pod_metadata.get("annotations") or {}
    profile = annotations.get(PROFILE_ANNOTATION) if isinstance(annotations, dict) else None
    return Workload(
        origin=origin,
        kind=kind,
        name=str(metadata.get("name") or metadata.get("generateName") or ""),
        namespace=str(namespace or metadata.get("namespace") or "default"),
        pod={"metadata": merged_meta, "spec": spec},
        pod_path=pod_path,
        user=user_from_metadata(pod_metadata),
        profile=str(profile) if profile else None,
        operation=operation,
        request_user=request_user,
        request_groups=request_groups,
        dry_run=dry_run,
    )


def workload_from_admission_review(review: Any) -> Workload:
    """The object of an AdmissionReview v1 request as a Workload.

    Raises MalformedInput for anything that is not a well-formed v1 review: the webhook
    answers those with HTTP 400, never with an allow.
    """
    if not isinstance(review, dict):
        raise MalformedInput("AdmissionReview must be a JSON object")
    if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
        raise MalformedInput("expected apiVersion admission.k8s.io/v1 and kind AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedInput("AdmissionReview has no 'request' object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedInput("AdmissionReview request has no 'uid'")
    obj = request.get("object")
    if obj is None:
        raise MalformedInput("AdmissionReview request has no 'object' (DELETE is not decided here)")
    user_info = request.get("userInfo") or {}
    if not isinstance(user_info, dict):
        raise MalformedInput("request.userInfo must be an object")
    groups = user_info.get("groups") or []
    if not isinstance(groups, list):
        raise MalformedInput("request.userInfo.groups must be a list")
    operation = request.get("operation", "CREATE")
    if operation not in ("CREATE", "UPDATE", "CONNECT"):
        raise MalformedInput(f"operation {operation!r} is not decided (CREATE and UPDATE are)")
    return workload_from_object(
        obj,
        origin="admission",
        namespace=request.get("namespace") if isinstance(request.get("namespace"), str) else None,
        operation=str(operation),
        request_user=str(user_info.get("username", "")) or None,
        request_groups=tuple(str(g) for g in groups),
        dry_run=bool(request.get("dryRun", False)),
    )


def workload_from_document(doc: Any, *, origin: Origin = "check") -> Workload:
    """Whatever a file holds: an AdmissionReview, a Pod or a workload object."""
    if isinstance(doc, dict) and doc.get("kind") == "AdmissionReview":
        return workload_from_admission_review(doc)
    return workload_from_object(doc, origin=origin)
