"""Pods made by KubeSpawner's own code (``get_pod_manifest`` -> ``make_pod``), as JSON.

Realistic input for the webhook: exactly what a zero-to-jupyterhub hub would send to the
API server for a user, with our annotations added the way the deploy/ values snippet adds
them (``extra_annotations`` and ``modify_pod_hook``). KubeSpawner needs a kubeconfig to be
constructed offline; a dummy one pointing at a closed loopback port is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DUMMY_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:9"}
  name: dummy
contexts:
- context: {cluster: dummy, user: dummy, namespace: jhub}
  name: dummy
current-context: dummy
users:
- name: dummy
  user: {token: dummy}
"""

#: Realistic profiles: what a hub's profile_list would set for each.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {"cpu_limit": 1.0, "cpu_guarantee": 0.1, "mem_limit": "2G", "mem_guarantee": "512M"},
    "large-memory": {"cpu_limit": 2.0, "cpu_guarantee": 0.5, "mem_limit": "8G", "mem_guarantee": "2G"},
    "bare": {},
}

IMAGE = "quay.io/jupyter/scipy-notebook:2025-01-06"


@contextlib.contextmanager
def _dummy_kubeconfig() -> Iterator[None]:
    """A dummy kubeconfig while KubeSpawner is built; the environment is restored after.

    kubernetes_asyncio reads KUBECONFIG once, at import, into KUBE_CONFIG_DEFAULT_LOCATION,
    so that module global is pointed at the dummy file too.
    """
    from kubernetes_asyncio.config import kube_config

    path = Path(tempfile.gettempdir()) / "jovial-guard-dummy-kubeconfig"
    path.write_text(DUMMY_KUBECONFIG)
    before_env = os.environ.get("KUBECONFIG")
    before_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(path)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    try:
        yield
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = before_default
        if before_env is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = before_env


async def kubespawner_pod(
    *,
    username: str,
    groups: tuple[str, ...] = (),
    profile: str = "default",
    namespace: str = "jhub",
    image: str = IMAGE,
    **overrides: Any,
) -> dict[str, Any]:
    """The pod KubeSpawner would create for ``username`` with ``profile``, as a JSON dict."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    user = SimpleNamespace(name=username, id=abs(hash(username)) % 10_000, url=f"/user/{username}/")
    settings: dict[str, Any] = {
        "namespace": namespace,
        "image": image,
        "uid": 1000,
        "fs_gid": 100,
        "extra_annotations": {
            # Groups travel as a JSON list (a group name may contain a comma).
            "jovial-guard.io/groups": json.dumps(sorted(groups)),
            # "bare": KubeSpawner's defaults, no profile chosen (the policy's default applies).
            **({"jovial-guard.io/profile": profile} if profile != "bare" else {}),
        },
        **PROFILES.get(profile, {}),
        **overrides,
    }
    with _dummy_kubeconfig():
        spawner = KubeSpawner(_mock=True, user=user, **settings)
        pod = await spawner.get_pod_manifest()
    client = ApiClient()
    try:
        doc: dict[str, Any] = client.sanitize_for_serialization(pod)
    finally:
        await client.close()
    return doc


def kubespawner_pod_sync(**kwargs: Any) -> dict[str, Any]:
    return asyncio.run(kubespawner_pod(**kwargs))


def admission_review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    namespace: str = "jhub",
    dry_run: bool = False,
    username: str = "system:serviceaccount:jhub:hub",
    uid: str | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 request as the API server would send it for ``obj``."""
    kind = obj.get("kind", "Pod")
    api_version = obj.get("apiVersion", "v1")
    group, _, version = api_version.rpartition("/")
    resource = {"Pod": "pods", "Deployment": "deployments", "StatefulSet": "statefulsets", "Job": "jobs",
                "CronJob": "cronjobs", "DaemonSet": "daemonsets", "ReplicaSet": "replicasets"}.get(kind, kind.lower() + "s")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": obj.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": username, "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def _quantity(value: Any) -> Any:
    """A JSON number quantity as the API server re-serializes it (canonical string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if float(value).is_integer():
        return str(int(value))
    millis = round(float(value) * 1000)
    return f"{millis}m"


def as_api_server_sends(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server puts it into an AdmissionReview.

    KubeSpawner writes resource quantities as JSON numbers (``cpu: 1.0``, ``memory:
    2147483648``); the API server decodes them into Quantities and sends strings
    (``"1"``, ``"2147483648"``). Only that conversion is done here.
    """
    import copy

    out = copy.deepcopy(obj)
    spec = out.get("spec", {})
    for kind in ("containers", "initContainers"):
        for container in spec.get(kind) or []:
            resources = container.get("resources") or {}
            for side in ("limits", "requests"):
                values = resources.get(side)
                if isinstance(values, dict):
                    resources[side] = {k: _quantity(v) for k, v in values.items()}
                    if not resources[side]:
                        del resources[side]
    return out
