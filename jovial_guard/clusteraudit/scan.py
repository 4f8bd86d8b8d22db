"""Read every pod, decide it through the same engine as admission, write the reports.

A stored pod is decided as an UPDATE that changes nothing (``oldObject`` = ``object``):
the pod's owner is the one its unchanged identity annotations name (they were judged when
the pod was created), and the whole pod is judged again under the current revision,
exactly as the webhook would judge an update of it. The namespace's enforcement-mode
labels are part of the input, as in admission.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from ..admission.namespaces import mode_labels
from ..admission.update import with_stored_object
from ..decision import MALFORMED_INPUT, Decision
from ..errors import MalformedInput
from ..normalize import workload_from_admission_review
from ..policy.engine import PolicyEngine
from ..workload import Workload
from .report import MANAGED_BY, REPORT_NAME, PodVerdict

log = logging.getLogger(__name__)

USER_KEY = "hub.jupyter.org/username"
GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"


def stored_pod_workload(pod: dict[str, Any], *, auditor: str, namespace_labels: dict[str, str]) -> Workload:
    """The decision input for a stored pod (see the module docstring)."""
    pod = {**pod, "apiVersion": "v1", "kind": "Pod"}
    raw_meta = pod.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    pod["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    request = {
        "uid": str(meta.get("uid", "")),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": str(meta.get("name", "")),
        "namespace": str(meta.get("namespace", "")),
        "operation": "UPDATE",
        "userInfo": {"username": auditor, "groups": ["system:authenticated"]},
        "object": pod,
        "oldObject": pod,
        "dryRun": True,
    }
    workload = workload_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    workload = with_stored_object(request, workload, "full")
    return dataclasses.replace(workload, namespace_labels=namespace_labels)


def pod_user(pod: dict[str, Any]) -> str:
    """The hub user a pod claims (annotation, then label), or ""."""
    meta = pod.get("metadata") or {}
    for key in ("annotations", "labels"):
        value = (meta.get(key) or {}).get(USER_KEY)
        if isinstance(value, str) and value:
            return value
    return ""


async def decide_pods(
    engine: PolicyEngine,
    pods: list[dict[str, Any]],
    namespace_labels: dict[str, dict[str, str]],
    *,
    auditor: str,
    concurrency: int = 4,
) -> list[PodVerdict]:
    """One verdict per pod; a pod that cannot be decided gets a fail-closed error verdict."""
    gate = asyncio.Semaphore(concurrency)

    async def one(pod: dict[str, Any]) -> PodVerdict:
        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace", ""))
        try:
            workload = stored_pod_workload(pod, auditor=auditor, namespace_labels=namespace_labels.get(ns, {}))
        except MalformedInput as exc:
            decision = Decision.deny(MALFORMED_INPUT, f"The stored pod cannot be decided: {exc}")
        else:
            async with gate:
                decision = await engine.decide(workload)
        verdict = PodVerdict(ns, str(meta.get("name", "")), str(meta.get("uid", "")), pod_user(pod), decision)
        _log_verdict(verdict)
        return verdict

    return list(await asyncio.gather(*(one(p) for p in pods)))


def _log_verdict(v: PodVerdict) -> None:
    for mode, reason in v.decision.violations():
        log.info(
            "pod %s/%s violates %s (%s)",
            v.namespace,
            v.name,
            reason.rule,
            mode,
            extra={"fields": {
                "event": "cluster-audit", "namespace": v.namespace, "pod": v.name, "pod_uid": v.uid,
                "user": v.user, "rule": reason.rule, "mode": mode, "decision_id": v.decision.decision_id,
                "revision": v.decision.policy_revision,
            }},
        )


async def read_cluster(api_client: Any, namespaces: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Every pod (as the API serves it, camelCase) and each namespace's mode labels."""
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api_client)
    ns_resp: Any = await core.list_namespace(_preload_content=False)
    ns_items = json.loads(await ns_resp.read())["items"]
    labels = {n["metadata"]["name"]: mode_labels(n["metadata"].get("labels")) for n in ns_items}
    pods: list[dict[str, Any]] = []
    if namespaces:
        for ns in namespaces:
            resp: Any = await core.list_namespaced_pod(ns, _preload_content=False)
            pods += json.loads(await resp.read())["items"]
    else:
        resp_all: Any = await core.list_pod_for_all_namespaces(_preload_content=False)
        pods = json.loads(await resp_all.read())["items"]
    return pods, labels


async def write_reports(api_client: Any, reports: dict[str, dict[str, Any]], *, scope: tuple[str, ...] = ()) -> None:
    """Create or replace each namespace's report; delete ours where no pod is left."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.rest import ApiException

    custom = client.CustomObjectsApi(api_client)
    for namespace, report in reports.items():
        try:
            current = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, REPORT_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, report)
        else:
            body = {**report, "metadata": {**report["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
            await custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, REPORT_NAME, body)
    selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
    existing = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=selector)
    for item in existing.get("items", []):
        ns = item["metadata"]["namespace"]
        if ns not in reports and (not scope or ns in scope) and item["metadata"]["name"] == REPORT_NAME:
            await custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, REPORT_NAME)
