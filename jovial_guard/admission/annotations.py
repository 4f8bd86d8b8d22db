"""What an admission answer records about itself: audit annotations and request labels.

Pure functions over a :class:`Decision` or a parsed AdmissionReview, shared by the handler
and its tests.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..decision import Decision

if TYPE_CHECKING:
    from .handler import HandlerResult


def with_request(result: HandlerResult, review: dict[str, Any], uid: str) -> HandlerResult:
    """The result labelled with what was asked (operation, kind, namespace, dryRun)."""
    raw_request = review.get("request")
    request: dict[str, Any] = raw_request if isinstance(raw_request, dict) else {}
    raw_kind = request.get("kind")
    kind: dict[str, Any] = raw_kind if isinstance(raw_kind, dict) else {}
    return dataclasses.replace(
        result,
        operation=str(request.get("operation") or ""),
        kind=str(kind.get("kind") or ""),
        namespace=str(request.get("namespace") or ""),
        dry_run=request.get("dryRun") is True,
        request_uid=uid,
    )


def decision_audit(decision: Decision) -> dict[str, str]:
    """Audit annotations for how a decision was made: the scope, the enforcement mode that
    acted, violations admitted in warn or audit mode, and any exemptions used."""
    audit: dict[str, str] = {"mode": decision.mode}
    if decision.scope:
        audit["scope"] = decision.scope
    if decision.warned:
        audit["warned"] = "; ".join(f"[{r.rule}] {r.message}" for r in decision.warned)[:1024]
    if decision.audited:
        audit["audited"] = "; ".join(f"[{r.rule}] {r.message}" for r in decision.audited)[:1024]
    if decision.exemptions:
        audit["exemptions"] = ", ".join(f"{e.id} ({e.rule}): {e.reason}" for e in decision.exemptions)[:1024]
    return audit
