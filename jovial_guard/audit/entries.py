"""Typed audit records for readers (the dashboard, admin tools), and the one definition of
what a ``response`` record carries, shared by the responder that writes it.

Readers get :class:`AuditEntry` values from :func:`jovial_guard.audit.query.entries` instead
of picking keys out of record bodies; a body that lacks a field gets an empty value, never
an exception (the log is verified separately, by ``jovial-guard audit verify``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResponseRecord:
    """What a response rule did about one event: the ``fields`` of a ``kind: response`` record."""

    response_rule: str
    action: str
    outcome: str  # done | failed | skipped | rate-limited | dry-run
    detail: str
    trigger_rule: str | None
    trigger_record: int | None

    def to_fields(self) -> dict[str, Any]:
        return {"trigger_record": self.trigger_record, "response_rule": self.response_rule,
                "action": self.action, "outcome": self.outcome, "detail": self.detail,
                "trigger_rule": self.trigger_rule}

    @classmethod
    def from_fields(cls, fields: object) -> ResponseRecord:
        doc: dict[str, Any] = fields if isinstance(fields, dict) else {}
        record = doc.get("trigger_record")
        trigger = doc.get("trigger_rule")
        return cls(
            response_rule=str(doc.get("response_rule") or ""),
            action=str(doc.get("action") or ""),
            outcome=str(doc.get("outcome") or ""),
            detail=str(doc.get("detail") or ""),
            trigger_rule=str(trigger) if trigger is not None else None,
            trigger_record=record if isinstance(record, int) and not isinstance(record, bool) else None,
        )


@dataclass(frozen=True)
class AuditEntry:
    """One record of the log as a reader needs it; ``response`` is set for responses only."""

    seq: int
    ts: str
    kind: str
    user: str | None
    rule: str
    priority: str
    response: ResponseRecord | None = None

    @classmethod
    def from_body(cls, seq: int, body: dict[str, Any]) -> AuditEntry:
        user = body.get("user")
        kind = str(body.get("kind") or "?")
        return cls(
            seq=seq,
            ts=str(body.get("ts") or ""),
            kind=kind,
            user=str(user) if user else None,
            rule=str(body.get("rule") or ""),
            priority=str(body.get("priority") or ""),
            response=ResponseRecord.from_fields(body.get("fields")) if kind == "response" else None,
        )


__all__ = ["AuditEntry", "ResponseRecord"]
