"""Describe a JupyterHub spawn as a pod-shaped :class:`~jovial_guard.workload.Workload`.

Why a pod shape for a Docker container: the Rego reads one input shape for both enforcement
points, so the embedded hub and Kubernetes are decided by the same rules. Pure: the hook
passes in plain values read from the spawner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..constants import PROFILE_ANNOTATION
from ..errors import MalformedInput
from ..workload import HubUser, Workload

#: The namespace embedded spawns are described in (there is no Kubernetes here).
EMBEDDED_NAMESPACE = "jovial-guard-embedded"
USERNAME_ANNOTATION = "hub.jupyter.org/username"
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(value: str) -> str:
    """A Kubernetes-label-safe rendering of ``value`` (63 chars, alphanumeric ends)."""
    cleaned = _LABEL_UNSAFE.sub("-", value)[:63].strip("-_.")
    return cleaned or "x"


def requested_profile(user_options: Mapping[str, Any] | None, *, default: str) -> str:
    """The profile a user asked for: form data (a list) or REST API JSON (a string)."""
    value: Any = (user_options or {}).get("profile", default)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else default
    if not isinstance(value, str):
        raise MalformedInput(f"profile must be a string, got {type(value).__name__}",
                             where="user_options.profile")
    return value.strip() or default


def spawn_workload(
    *,
    username: str,
    groups: tuple[str, ...],
    admin: bool,
    image: str,
    profile: str,
    server_name: str = "",
    resources: Mapping[str, Any] | None = None,
) -> Workload:
    """The workload the policy decides for one spawn (origin ``spawn``)."""
    if not username:
        raise MalformedInput("spawn without a user name", where="spawner.user.name")
    if not image:
        raise MalformedInput("spawn without an image", where="spawner.image")
    name = label_value(f"jupyter-{username}" + (f"--{server_name}" if server_name else ""))
    container: dict[str, Any] = {
        "name": "notebook",
        "image": image,
        "resources": dict(resources or {}),
    }
    pod = {
        "metadata": {
            "name": name,
            "namespace": EMBEDDED_NAMESPACE,
            "labels": {
                "app": "jupyterhub",
                "component": "singleuser-server",
                USERNAME_ANNOTATION: label_value(username),
                SERVERNAME_ANNOTATION: label_value(server_name) if server_name else "",
            },
            "annotations": {
                USERNAME_ANNOTATION: username,
                SERVERNAME_ANNOTATION: server_name,
                PROFILE_ANNOTATION: profile,
            },
        },
        "spec": {"containers": [container]},
    }
    return Workload(
        origin="spawn",
        kind="Pod",
        name=name,
        namespace=EMBEDDED_NAMESPACE,
        pod=pod,
        user=HubUser(name=username, groups=tuple(sorted(set(groups))), admin=admin),
        profile=profile,
        operation="CREATE",
        request_user=username,
        request_groups=tuple(sorted(set(groups))),
    )
