"""Filter audit records by user, rule, priority, kind and time (read-only, no verification:
run ``jovial-guard audit verify`` to know the records are genuine)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .entries import AuditEntry
from .events import PRIORITIES, canonical_priority
from .log import iter_bodies

_RELATIVE = re.compile(r"^(\d+)([smhd])$")


def parse_time(value: str, *, now: _dt.datetime | None = None) -> _dt.datetime:
    """RFC 3339 (``2026-11-27T05:00:00Z``) or relative (``15m``, ``2h``, ``1d`` ago)."""
    now = now or _dt.datetime.now(_dt.UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - _dt.timedelta(**{unit: int(match.group(1))})
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"time must be RFC 3339 or like 15m/2h/1d, not {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)


def _record_time(body: dict[str, Any]) -> _dt.datetime | None:
    ts = body.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        return _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Query:
    user: str | None = None
    unattributed: bool = False
    rule: str | None = None
    rule_contains: str | None = None
    priority: str | None = None
    min_priority: str | None = None
    kind: str | None = None
    since: _dt.datetime | None = None
    until: _dt.datetime | None = None

    def matches(self, body: dict[str, Any]) -> bool:
        if self.user is not None and body.get("user") != self.user:
            return False
        if self.unattributed and body.get("attribution") != "unattributed":
            return False
        if self.rule is not None and body.get("rule") != self.rule:
            return False
        if self.rule_contains is not None and self.rule_contains.lower() not in str(body.get("rule", "")).lower():
            return False
        if self.priority is not None and body.get("priority") != canonical_priority(self.priority):
            return False
        if self.min_priority is not None:
            prio = body.get("priority")
            if prio not in PRIORITIES or PRIORITIES.index(prio) > PRIORITIES.index(canonical_priority(self.min_priority)):
                return False
        if self.kind is not None and body.get("kind") != self.kind:
            return False
        if self.since is not None or self.until is not None:
            when = _record_time(body)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True


def run_query(directory: str | Path, query: Query, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Matching records as dicts with their ``seq``, oldest first."""
    found = 0
    for seq, raw in iter_bodies(directory):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(body, dict) and query.matches(body):
            yield {"seq": seq, **body}
            found += 1
            if limit is not None and found >= limit:
                return


def entries(directory: str | Path, query: Query, *, limit: int | None = None) -> Iterator[AuditEntry]:
    """Matching records as typed :class:`~.entries.AuditEntry` values, oldest first."""
    for body in run_query(directory, query, limit=limit):
        yield AuditEntry.from_body(int(body["seq"]), body)
