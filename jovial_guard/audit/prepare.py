"""Bulk preparation in worker processes: parse, validate, attribute, encode and leaf-hash
NDJSON events off the event loop's core.

The writer only has to chain (one small hash per record), write and sync; everything
per-event and expensive happens here, in a ProcessPoolExecutor sized to the CPUs. Workers
open the spawn registry read-only-by-use (SQLite allows concurrent readers) so attribution
is identical to the in-process path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .attribution import Attributor
from .events import SERVERNAME_LABEL, USERNAME_LABEL, MalformedEvent, classify, encode_body
from .record import leaf_of
from .registry import SpawnRegistry

#: What the main process needs per event (metrics, responder), without the bulky fields.
SUMMARY_KEYS = ("kind", "source", "rule", "priority", "user", "server", "attribution", "summary",
                "container_id", "container_name", "pod", "namespace")

_attributor: Attributor | None = None
_registry_path: str | None = None


@dataclass
class Prepared:
    bodies: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[tuple[bytes, str]] = field(default_factory=list)
    ignored: int = 0
    #: (kind, rule, priority, user) -> count, for metrics without per-event objects.
    counts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)


def init_worker(registry_path: str | None) -> None:
    global _attributor, _registry_path
    _registry_path = registry_path
    _attributor = Attributor(SpawnRegistry(registry_path) if registry_path else None)


def summary(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: event.get(k) for k in SUMMARY_KEYS}
    if event.get("kind") == "decision":
        out["fields"] = event.get("fields")
    return out


def prepare_lines(payload: bytes, ts: str, attributor: Attributor | None = None, *,
                  want_events: bool = True) -> Prepared:
    """Everything per-event for one NDJSON payload (pure apart from registry lookups).

    ``want_events``: also return a small summary per event (the responder needs them);
    decisions are always returned (their metrics need the reasons).
    """
    attributor = attributor or _attributor or Attributor(None)
    out = Prepared()
    loads = orjson.loads
    counts = out.counts
    memo: dict[tuple[Any, ...], tuple[Any, Any, str]] = {}
    for line in payload.split(b"\n"):
        if not line.strip():
            continue
        try:
            event = classify(loads(line), line)
        except orjson.JSONDecodeError as exc:
            out.quarantined.append((line, f"invalid JSON: {exc}"))
            continue
        except MalformedEvent as exc:
            out.quarantined.append((line, str(exc)))
            continue
        if event is None:
            out.ignored += 1
            continue
        if "attribution" not in event:
            # Memo per payload: a batch usually holds many events of the same few containers.
            labels = event.get("labels") or {}
            who = (event.get("container_id"), event.get("container_name"), event.get("pod"),
                   event.get("namespace"), labels.get(USERNAME_LABEL), labels.get(SERVERNAME_LABEL))
            known = memo.get(who)
            if known is None:
                attributor.attribute(event)
                memo[who] = (event["user"], event["server"], event["attribution"])
            else:
                event["user"], event["server"], event["attribution"] = known
        body = encode_body(event, ts)
        out.bodies.append(body)
        out.leaves.append(leaf_of(body))
        if want_events or event["kind"] == "decision":
            out.events.append(summary(event))
        else:
            key = (event["kind"], str(event.get("rule")), str(event.get("priority")), event.get("user") or "unattributed")
            counts[key] = counts.get(key, 0) + 1
    return out


def prepare_in_worker(payload: bytes, ts: str, want_events: bool) -> Prepared:
    return prepare_lines(payload, ts, want_events=want_events)
