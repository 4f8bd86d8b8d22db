"""Render a SecuritySpec into an RFC 6902 JSON Patch that hardens a pod.

Pure and deterministic: the same pod and spec always give the same operations in the
same order (golden-tested under ``tests/vectors/render_pod/``). The patch only *adds*
what is missing; anything the pod states explicitly that the policy forbids was already
denied by OPA, so the renderer never has to overwrite a user's choice.

What is filled in when absent:

* pod ``securityContext``: seccompProfile, runAsNonRoot, runAsUser/runAsGroup, fsGroup;
* each container's ``securityContext``: allowPrivilegeEscalation false, capabilities
  drop ALL, and for notebook pods readOnlyRootFilesystem true;
* for notebook pods, an ``emptyDir`` volume and mount for each writable path (``/tmp``,
  the home directory) a container does not mount already;
* each non-ephemeral container's resource limits (and requests) from the profile;
* with a storage grant staged on the node (``storage.node_stage``), a ``hostPath`` volume of
  that directory mounted read-only, ``HostToContainer``, at the grant's mount parent
  (``/lustre``) in every regular container: the node agent mounts the user's fileset under it
  and the mount (and its removal) propagates into the running pod;
* the spec's node labels in ``nodeSelector`` (a notebook under a Localhost seccomp profile
  may only land on a node whose agent installed the profile). A key the pod already selects
  with another value is replaced: the pod could not run anywhere else safely;
* ``hostUsers: false`` when the spec asks for it (notebooks, when the policy's
  ``settings.node.user_namespaces`` says the nodes support user namespaces).
"""

from __future__ import annotations

import re
from typing import Any

from ..decision import SecuritySpec
from .quantity import parse_quantity

Op = dict[str, Any]

#: Ephemeral containers may not carry resources; everything else does.
LIMITED_KINDS = ("containers", "initContainers")
SECURED_KINDS = ("containers", "initContainers", "ephemeralContainers")


def escape_pointer(token: str) -> str:
    """RFC 6901 escaping of one JSON pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def scratch_volume_name(path: str) -> str:
    """A stable, valid volume name for a writable path (``/home/jovyan`` -> jg-scratch-home-jovyan)."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"
    return f"jg-scratch-{slug}"[:63].rstrip("-")


def _pod_security_context_ops(spec_doc: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    wanted: dict[str, Any] = {
        "seccompProfile": spec.seccomp.to_json(),
        "runAsNonRoot": True,
        "runAsUser": spec.uid,
        "runAsGroup": spec.gid,
        "fsGroup": spec.fs_group,
    }
    current = spec_doc.get("securityContext")
    if not isinstance(current, dict):
        return [{"op": "add", "path": "/spec/securityContext", "value": wanted}]
    return [
        {"op": "add", "path": f"/spec/securityContext/{key}", "value": value}
        for key, value in wanted.items()
        if key not in current
    ]


def _container_security_ops(
    base: str, container: dict[str, Any], spec: SecuritySpec, *, read_only: bool
) -> list[Op]:
    wanted: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if read_only:
        wanted["readOnlyRootFilesystem"] = True
    capabilities = {"drop": list(spec.capabilities_drop)}
    context = container.get("securityContext")
    if not isinstance(context, dict):
        return [{"op": "add", "path": f"{base}/securityContext", "value": {**wanted, "capabilities": capabilities}}]
    ops = [
        {"op": "add", "path": f"{base}/securityContext/{key}", "value": value}
        for key, value in wanted.items()
        if key not in context
    ]
    current_caps = context.get("capabilities")
    if not isinstance(current_caps, dict):
        ops.append({"op": "add", "path": f"{base}/securityContext/capabilities", "value": capabilities})
    elif not isinstance(current_caps.get("drop"), list):
        ops.append({"op": "add", "path": f"{base}/securityContext/capabilities/drop", "value": capabilities["drop"]})
    else:
        for cap in spec.capabilities_drop:
            if cap not in current_caps["drop"]:
                ops.append({"op": "add", "path": f"{base}/securityContext/capabilities/drop/-", "value": cap})
    return ops


def _resource_ops(base: str, container: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    res = spec.resources
    limits = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    requests = {"cpu": res.cpu_request, "memory": res.memory_request}
    if res.gpu:
        limits["nvidia.com/gpu"] = str(res.gpu)
    current = container.get("resources")
    if not isinstance(current, dict):
        return [{"op": "add", "path": f"{base}/resources", "value": {"limits": limits, "requests": requests}}]
    ops: list[Op] = []
    cur_limits = current.get("limits")
    cur_requests = current.get("requests")
    if not isinstance(cur_limits, dict):
        # Requests the pod states stay; only the missing side is filled in.
        ops.append({"op": "add", "path": f"{base}/resources/limits", "value": limits})
        if isinstance(cur_requests, dict):
            # A stated request above the profile's limit would make the patched pod
            # invalid (request > limit); the limit is raised to the request, which the
            # policy has already checked against the group's maximum.
            ops[-1]["value"] = {k: _at_least(v, cur_requests.get(k)) for k, v in limits.items()}
    else:
        for key in ("cpu", "memory"):
            if key not in cur_limits:
                value = _at_least(limits[key], (cur_requests or {}).get(key) if isinstance(cur_requests, dict) else None)
                ops.append({"op": "add", "path": f"{base}/resources/limits/{escape_pointer(key)}", "value": value})
    if not isinstance(cur_requests, dict):
        # A limit the pod set may be below the profile's request: then Kubernetes'
        # own defaulting (request = limit) is the right answer, so add requests only
        # when no limit was stated either.
        if not isinstance(cur_limits, dict):
            ops.append({"op": "add", "path": f"{base}/resources/requests", "value": requests})
    return ops


def _at_least(limit: str, request: Any) -> str:
    """The profile's limit, or the stated request when that is larger."""
    if request is None:
        return limit
    try:
        return str(request) if parse_quantity(request) > parse_quantity(limit) else limit
    except ValueError:
        return limit


def _scratch_ops(pod: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    """emptyDir volumes + mounts so a read-only root still has writable scratch."""
    spec_doc = pod.get("spec") or {}
    volumes = spec_doc.get("volumes")
    existing_volume_names = {v.get("name") for v in volumes or [] if isinstance(v, dict)}
    ops: list[Op] = []
    new_volumes: list[dict[str, Any]] = []
    containers = spec_doc.get("containers") or []
    for path in spec.writable_paths:
        name = scratch_volume_name(path)
        needs_volume = False
        for index, container in enumerate(containers):
            mounts = container.get("volumeMounts")
            mounted = {m.get("mountPath") for m in mounts or [] if isinstance(m, dict)}
            if path in mounted:
                continue
            needs_volume = True
            mount = {"name": name, "mountPath": path}
            base = f"/spec/containers/{index}/volumeMounts"
            if isinstance(mounts, list):
                ops.append({"op": "add", "path": f"{base}/-", "value": mount})
            else:
                ops.append({"op": "add", "path": base, "value": [mount]})
                container = {**container, "volumeMounts": [mount]}
                containers = [*containers[:index], container, *containers[index + 1 :]]
        if needs_volume and name not in existing_volume_names:
            new_volumes.append({"name": name, "emptyDir": {}})
    if new_volumes:
        if isinstance(volumes, list):
            ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in new_volumes]
        else:
            ops.append({"op": "add", "path": "/spec/volumes", "value": new_volumes})
    return ops


def _node_selector_ops(spec_doc: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    """Require the spec's node labels; the pod's own selector keys stay (they only narrow)."""
    if not spec.node_selector:
        return []
    current = spec_doc.get("nodeSelector")
    if not isinstance(current, dict):
        return [{"op": "add", "path": "/spec/nodeSelector", "value": dict(spec.node_selector)}]
    return [
        {"op": "add", "path": f"/spec/nodeSelector/{escape_pointer(key)}", "value": value}
        for key, value in spec.node_selector
        if current.get(key) != value
    ]


STORAGE_VOLUME = "jg-storage"


def _storage_ops(spec_doc: dict[str, Any], spec: SecuritySpec, earlier: list[Op]) -> list[Op]:
    """The user's staging directory on the node, read-only in every regular container.

    ``earlier`` are the ops rendered before these: a list they create is appended to.
    """
    storage = spec.storage
    if storage is None or not storage.node_stage:
        return []
    created = {op["path"] for op in earlier if op["op"] == "add"}
    parent = storage.mount_path.rsplit("/", 1)[0] or "/"
    volume = {"name": STORAGE_VOLUME, "hostPath": {"path": storage.node_stage, "type": "DirectoryOrCreate"}}
    mount = {"name": STORAGE_VOLUME, "mountPath": parent, "readOnly": True, "mountPropagation": "HostToContainer"}
    volumes = spec_doc.get("volumes")
    if isinstance(volumes, list) and any(isinstance(v, dict) and v.get("name") == STORAGE_VOLUME for v in volumes):
        return []
    has_volumes = isinstance(volumes, list) or "/spec/volumes" in created
    ops: list[Op] = [{"op": "add", "path": "/spec/volumes/-", "value": volume} if has_volumes
                     else {"op": "add", "path": "/spec/volumes", "value": [volume]}]
    for index, container in enumerate(spec_doc.get("containers") or []):
        base = f"/spec/containers/{index}/volumeMounts"
        has_mounts = isinstance(container.get("volumeMounts"), list) or base in created
        ops.append({"op": "add", "path": f"{base}/-", "value": mount} if has_mounts
                   else {"op": "add", "path": base, "value": [mount]})
    return ops


def _host_users_ops(spec_doc: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    """``hostUsers: false`` when the spec asks for the pod's own user namespace."""
    if spec.host_users is None or "hostUsers" in spec_doc:
        return []
    return [{"op": "add", "path": "/spec/hostUsers", "value": spec.host_users}]


def render_pod_patch(pod: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    """JSON Patch operations (against ``pod``) that make it satisfy ``spec``.

    ``pod`` is ``{"metadata": ..., "spec": ...}``. Returns ``[]`` for a pod that already
    complies. Operations are ordered so each one's parent exists when it is applied.
    """
    spec_doc = pod.get("spec")
    if not isinstance(spec_doc, dict):
        raise ValueError("pod has no spec map")
    ops = _pod_security_context_ops(spec_doc, spec)
    for kind in SECURED_KINDS:
        for index, container in enumerate(spec_doc.get(kind) or []):
            base = f"/spec/{kind}/{index}"
            read_only = spec.read_only_root and kind != "ephemeralContainers"
            ops += _container_security_ops(base, container, spec, read_only=read_only)
            if kind in LIMITED_KINDS:
                ops += _resource_ops(base, container, spec)
    if spec.read_only_root and spec.writable_paths:
        ops += _scratch_ops(pod, spec)
    ops += _node_selector_ops(spec_doc, spec)
    ops += _storage_ops(spec_doc, spec, ops)
    ops += _host_users_ops(spec_doc, spec)
    return ops


def reroot_patch(ops: list[Op], pod_path: str) -> list[Op]:
    """Move a patch rendered against a pod onto the object holding it as a template.

    A Deployment's pod lives at ``/spec/template``; a CronJob's at
    ``/spec/jobTemplate/spec/template``. ``pod_path`` "" (a Pod) returns the ops as they are.
    """
    if not pod_path:
        return [dict(op) for op in ops]
    return [{**op, "path": pod_path + op["path"]} for op in ops]
