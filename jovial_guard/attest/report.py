"""Attestation results as audit events (pure), and the intake form the node agent posts.

Every check is an event: ``attestation ok`` (Informational) or, when the set of drifts is new
or different from the previous check, ``attestation drift`` (Critical): that is the rule the
response rules match, so a drift triggers its responses once, not at every pass. A drift that
persists unchanged is logged as ``attestation drift unchanged`` (Warning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..audit.events import MAX_TEXT, MalformedEvent
from .compare import KINDS, Drift, summary

RULE_OK = "attestation ok"
RULE_DRIFT = "attestation drift"
RULE_UNCHANGED = "attestation drift unchanged"
RULE_UNATTESTABLE = "attestation impossible"
_PRIORITY = {RULE_OK: "Informational", RULE_DRIFT: "Critical", RULE_UNCHANGED: "Warning",
             RULE_UNATTESTABLE: "Warning"}


def rule_for(drifts: Sequence[Drift], previous: Sequence[Drift] | None) -> str:
    if not drifts:
        return RULE_OK
    return RULE_UNCHANGED if previous is not None and list(previous) == list(drifts) else RULE_DRIFT


def attestation_event(*, user: str | None, server: str | None, drifts: Sequence[Drift],
                      previous: Sequence[Drift] | None, source: str, fields: dict[str, Any],
                      container_id: str | None = None, pod: str | None = None,
                      namespace: str | None = None, network_cut: bool = False) -> dict[str, Any]:
    """The audit event of one check of one server."""
    rule = rule_for(drifts, previous)
    target = f"{user}/{server or ''}" if user else (pod or container_id or "?")
    text = summary(list(drifts), network_cut=network_cut)
    detail = "; ".join(d.detail for d in drifts)
    return {
        "kind": "attestation", "source": source, "rule": rule, "priority": _PRIORITY[rule],
        "summary": f"{target}: {text}" + (f" ({detail})" if detail else ""),
        "user": user, "server": server, "attribution": "registry" if user else "unattributed",
        "container_id": container_id, "pod": pod, "namespace": namespace,
        "fields": {"status": text, "drifts": [d.to_json() for d in drifts], **fields},
    }


def unattestable_event(*, user: str, server: str, reason: str, source: str) -> dict[str, Any]:
    """A running server that cannot be compared (no record, unreadable record)."""
    return {"kind": "attestation", "source": source, "rule": RULE_UNATTESTABLE,
            "priority": _PRIORITY[RULE_UNATTESTABLE], "summary": f"{user}/{server}: {reason}"[:MAX_TEXT],
            "user": user, "server": server, "attribution": "registry",
            "fields": {"status": "unattested", "reason": reason[:MAX_TEXT], "drifts": []}}


def intake_event(doc: Any) -> dict[str, Any]:
    """Validate an attestation event posted by a node agent (``POST /attestation``)."""
    if not isinstance(doc, dict):
        raise MalformedEvent("an attestation event must be a JSON object")
    rule = doc.get("rule")
    if rule not in _PRIORITY:
        raise MalformedEvent(f"attestation rule must be one of {', '.join(_PRIORITY)}")
    fields = doc.get("fields")
    if not isinstance(fields, dict) or not isinstance(fields.get("drifts"), list):
        raise MalformedEvent("attestation fields.drifts must be a list")
    for drift in fields["drifts"]:
        if not isinstance(drift, dict) or drift.get("kind") not in KINDS or not isinstance(drift.get("detail"), str):
            raise MalformedEvent(f"each drift needs a kind ({', '.join(KINDS)}) and a detail")
    out: dict[str, Any] = {"kind": "attestation", "source": str(doc.get("source") or "node-agent")[:200],
                           "rule": rule, "priority": _PRIORITY[rule],
                           "summary": str(doc.get("summary") or rule)[:MAX_TEXT], "fields": fields}
    for key in ("container_id", "pod", "namespace", "labels"):
        value = doc.get(key)
        if value is not None and not isinstance(value, (str, dict)):
            raise MalformedEvent(f"{key} must be a string")
        out[key] = value
    return out
