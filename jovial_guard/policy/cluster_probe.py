"""The deploy probe for a cluster: the known-good and known-bad pods, dry-run through the API server.

The replicas' OPAs are on loopback inside their pods, so a deploy from outside cannot ask
them directly; a dry-run create (``dryRun=All``: admission runs, nothing is stored) goes
through the API server to the webhooks and back, which is the path users take. The
known-good notebook must be admitted; the known-bad privileged pod must be refused by the
policy (a ``[pod-security/...]`` reason, not another admission plugin).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .probes import KNOWN_BAD, KNOWN_GOOD

ClusterProbe = Callable[[str], Awaitable[list[str]]]


def _pod(workload: Any) -> dict[str, Any]:
    pod: dict[str, Any] = copy.deepcopy(workload.pod)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    pod.setdefault("metadata", {})["name"] = workload.name
    return pod


def api_server_probe(kubeconfig: str | None, namespace: str) -> ClusterProbe:
    """A probe that dry-runs the known pods in ``namespace`` (a namespace the webhooks guard)."""

    def run() -> list[str]:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        api = config.new_client_from_config(kubeconfig) if kubeconfig else None  # type: ignore[no-untyped-call]
        if api is None:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api)
        problems = []
        try:
            core.create_namespaced_pod(namespace, _pod(KNOWN_GOOD), dry_run="All")  # type: ignore[arg-type]
        except ApiException as exc:
            problems.append(f"known-good notebook was refused through the API server: {_message(exc)}")
        try:
            core.create_namespaced_pod(namespace, _pod(KNOWN_BAD), dry_run="All")  # type: ignore[arg-type]
            problems.append("known-bad privileged pod was admitted through the API server")
        except ApiException as exc:
            if "[pod-security/" not in _message(exc):
                problems.append(f"known-bad privileged pod was refused, but not by the policy: {_message(exc)}")
        return problems

    async def probe(revision: str) -> list[str]:
        return await asyncio.to_thread(run)

    return probe


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", ""))[:300]
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"
