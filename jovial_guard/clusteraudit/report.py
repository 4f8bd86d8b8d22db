"""Build wg-policy PolicyReports (``wgpolicyk8s.io/v1alpha2``) from decisions. No I/O.

One report per namespace, named :data:`REPORT_NAME`, so Policy Reporter and
``kubectl get policyreports -A`` show jovial-guard's view beside Kyverno's or
Gatekeeper's. Each pod gives one result per violation (``fail`` for enforce and audit
mode, ``warn`` for warn mode, ``error`` when the engine could not decide) or one ``pass``.
The rule id's package is the result's ``policy``; the mode, the hub user, the policy
revision and the decision id are ``properties``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..decision import ENGINE_UNAVAILABLE, MALFORMED_INPUT, Decision

API_VERSION = "wgpolicyk8s.io/v1alpha2"
REPORT_NAME = "jovial-guard"
SOURCE = "jovial-guard"
MANAGED_BY = {"app.kubernetes.io/managed-by": "jovial-guard"}
RESULT_OF_MODE = {"enforce": "fail", "audit": "fail", "warn": "warn"}
#: Severity by rule package: Pod Security and identity protect the node and other users.
SEVERITY = {"pod-security": "high", "identity": "high", "images": "medium", "resources": "low", "profiles": "low"}


@dataclass(frozen=True)
class PodVerdict:
    """One stored pod and the decision the current revision makes about it."""

    namespace: str
    name: str
    uid: str
    user: str
    decision: Decision


@dataclass(frozen=True)
class Finding:
    """One violation, for metrics and the summary: no message, bounded fields only."""

    namespace: str
    rule: str
    mode: str
    user: str


def findings(verdicts: list[PodVerdict]) -> list[Finding]:
    """Every violation that acted, across all pods (engine failures as mode ``error``)."""
    out: list[Finding] = []
    for v in verdicts:
        for mode, reason in v.decision.violations():
            out.append(Finding(v.namespace, reason.rule, "error" if _is_error(v.decision) else mode, v.user))
    return out


def _is_error(decision: Decision) -> bool:
    return any(r.rule in (ENGINE_UNAVAILABLE, MALFORMED_INPUT) for r in decision.reasons)


def _results(v: PodVerdict, timestamp: int) -> list[dict[str, Any]]:
    resource = {"apiVersion": "v1", "kind": "Pod", "name": v.name, "namespace": v.namespace, "uid": v.uid}
    props = {"revision": v.decision.policy_revision, "decision-id": v.decision.decision_id}
    if v.user:
        props["user"] = v.user
    base = {"source": SOURCE, "timestamp": {"seconds": timestamp, "nanos": 0}, "scored": True, "resources": [resource]}
    if _is_error(v.decision):
        return [{**base, "policy": "engine", "rule": v.decision.reasons[0].rule, "result": "error",
                 "message": v.decision.message(), "properties": {**props, "mode": "enforce"}}]
    out = []
    for mode, reason in v.decision.violations():
        package = reason.rule.split("/")[0]
        out.append({
            **base,
            "policy": package,
            "rule": reason.rule,
            "result": RESULT_OF_MODE.get(mode, "fail"),
            "severity": SEVERITY.get(package, "medium"),
            "message": reason.message,
            "properties": {**props, "mode": mode},
        })
    if not out:
        out.append({**base, "policy": "all", "rule": "all", "result": "pass",
                    "message": "The current policy revision admits this pod.", "properties": props})
    return out


def build_reports(verdicts: list[PodVerdict], *, revision: str, timestamp: int) -> dict[str, dict[str, Any]]:
    """PolicyReport objects by namespace for ``verdicts`` (pods sorted by name)."""
    by_ns: dict[str, list[PodVerdict]] = {}
    for v in sorted(verdicts, key=lambda v: (v.namespace, v.name)):
        by_ns.setdefault(v.namespace, []).append(v)
    reports: dict[str, dict[str, Any]] = {}
    for namespace, pods in by_ns.items():
        results = [r for v in pods for r in _results(v, timestamp)]
        counts = Counter(r["result"] for r in results)
        reports[namespace] = {
            "apiVersion": API_VERSION,
            "kind": "PolicyReport",
            "metadata": {
                "name": REPORT_NAME,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
                "annotations": {"jovial-guard.io/policy-revision": revision},
            },
            "summary": {k: counts.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")},
            "results": results,
        }
    return reports
