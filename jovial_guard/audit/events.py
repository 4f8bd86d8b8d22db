"""Turn what arrives (Falco alerts, falcosidekick forwards, engine events, hub events,
policy decisions) into one audit event shape. Pure functions, no I/O.

An audit event is a dict with at least ``kind``, ``source``, ``rule``, ``priority`` and the
attribution fields (``user``, ``server``, ``attribution``) filled in later by
:mod:`.attribution`. Anything that does not match a known form raises
:class:`MalformedEvent`; the intake quarantines it (nothing is dropped silently).

Falco's JSON output (``json_output: true``, sent by ``http_output`` one alert per POST):
``{"uuid", "output", "priority", "rule", "time", "output_fields": {...}, "source", "tags",
"hostname"}``. falcosidekick's webhook output forwards the same payload; its CloudEvents
output wraps it (structured: ``{"specversion", "type": "falco.rule.output.v1", "data"}``;
binary: ``ce-*`` headers around the plain payload).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import MalformedInput

#: Falco priorities, most severe first (falco.yaml ``priority``, syslog levels).
PRIORITIES: tuple[str, ...] = (
    "Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug",
)
_PRIORITY_BY_LOWER = {p.lower(): p for p in PRIORITIES} | {"info": "Informational"}
USERNAME_LABEL = "hub.jupyter.org/username"
SERVERNAME_LABEL = "hub.jupyter.org/servername"
MAX_TEXT = 8192


class MalformedEvent(MalformedInput, ValueError):
    """An event that is not in any accepted form; ``reason`` says what is wrong."""


def priority_rank(priority: str) -> int:
    """0 for Emergency ... 7 for Debug; raises MalformedEvent for unknown names."""
    canonical = canonical_priority(priority)
    return PRIORITIES.index(canonical)


def canonical_priority(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in _PRIORITY_BY_LOWER:
        raise MalformedEvent(f"priority must be one of {', '.join(PRIORITIES)}, not {value!r}")
    return _PRIORITY_BY_LOWER[value.lower()]


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise MalformedEvent(f"{name} must be a non-empty string")
    return value[:MAX_TEXT]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _time(value: Any, name: str = "time") -> str:
    """Falco writes RFC 3339 with nanoseconds (``2026-11-27T05:00:00.123456789Z``)."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise MalformedEvent(f"{name} must be an RFC 3339 timestamp, not {str(value)[:64]!r}")
    return value


_SCALAR_TYPES = (str, int, float, bool, type(None))


def _scalar_fields(fields: dict[Any, Any]) -> dict[str, Any]:
    """Falco's output_fields are flat: strings, numbers, booleans, null (or lists of them)."""
    for key, value in fields.items():
        if type(value) in _SCALAR_TYPES:
            if type(value) is str and len(value) > MAX_TEXT:
                fields = {**fields, key: value[:MAX_TEXT]}
            continue
        if not isinstance(key, str):
            raise MalformedEvent("output_fields keys must be strings")
        if isinstance(value, (str, int, float, bool)):
            continue
        if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
            continue
        raise MalformedEvent(f"output_fields[{key!r}] must be a scalar")
    return fields  # keys of a JSON object are strings by construction


def _labels_from_falco(fields: Mapping[str, Any]) -> dict[str, str]:
    """Pod labels Falco can report: ``k8s.pod.label[KEY]`` fields and ``k8s.pod.labels``."""
    labels: dict[str, str] = {}
    for key in fields:
        if "label" not in key:
            continue
        value = fields[key]
        for prefix in ("k8s.pod.label[", "container.label["):
            if key.startswith(prefix) and key.endswith("]") and isinstance(value, str):
                labels[key[len(prefix):-1]] = value
    raw = fields.get("k8s.pod.labels")
    if isinstance(raw, str):
        # Falco renders the whole label map as "(k1:v1,k2:v2)" or "k1:v1, k2:v2".
        for item in raw.strip("()").split(","):
            k, sep, v = item.strip().partition(":")
            if sep:
                labels.setdefault(k.strip(), v.strip())
    return labels


def falco_event(doc: Any, *, source: str = "falco", raw: bytes | None = None) -> dict[str, Any]:
    """Normalize one Falco alert (or falcosidekick's forward of one).

    ``raw`` is the alert's JSON text as received; the record keeps the alert verbatim from it
    (see :func:`encode_body`) instead of re-encoding what was parsed.
    """
    if not isinstance(doc, dict):
        raise MalformedEvent("a Falco alert must be a JSON object")
    if "specversion" in doc:  # CloudEvents structured mode (falcosidekick's cloudevents output)
        if doc.get("type") != "falco.rule.output.v1" or not isinstance(doc.get("data"), dict):
            raise MalformedEvent("CloudEvent is not a falco.rule.output.v1 event with a data object")
        return falco_event(doc["data"], source="falcosidekick-cloudevents")  # raw: re-encoded
    rule = _text(doc.get("rule"), "rule")
    priority = canonical_priority(doc.get("priority"))
    _time(doc.get("time"))  # validated; kept in the verbatim alert
    output = _text(doc.get("output"), "output")
    fields = doc.get("output_fields")
    if not isinstance(fields, dict):
        raise MalformedEvent("output_fields must be an object (set json_output: true in falco.yaml)")
    fields = _scalar_fields(fields)
    tags = doc.get("tags", [])
    if type(tags) is not list or not all(type(t) is str for t in tags):
        raise MalformedEvent("tags must be a list of strings")
    if "uuid" in doc and source == "falco":
        source = "falcosidekick"
    for optional in ("hostname", "source", "uuid"):
        _text(doc.get(optional), optional, required=False)
    # Only what attribution, metrics and responses need is lifted out; the record keeps the
    # alert itself (time, output_fields, tags, hostname, uuid) verbatim under "alert".
    event: dict[str, Any] = {
        "kind": "falco",
        "source": source,
        "rule": rule,
        "priority": priority,
        "container_id": _str_or_none(fields.get("container.id")),
        "container_name": _str_or_none(fields.get("container.name")),
        "pod": _str_or_none(fields.get("k8s.pod.name")),
        "namespace": _str_or_none(fields.get("k8s.ns.name")),
        "labels": _labels_from_falco(fields),
        "summary": output,
        "_alert": doc,
        "alert_raw": raw.strip() if raw is not None and b"\n" not in raw.strip() else None,
    }
    return event


#: Falco event keys that live only in memory: the record keeps the alert itself instead.
_FALCO_MEMORY_ONLY = frozenset({"summary", "_alert", "alert_raw"})


def encode_body(event: dict[str, Any], ts: str) -> bytes:
    """The record body for an event (version 1).

    Falco alerts are stored verbatim under ``alert`` (the raw JSON as received when it is a
    single line) next to the normalized, attributed fields; other events as normalized.
    """
    if "_alert" in event:
        raw = event.get("alert_raw") or orjson.dumps(event["_alert"])
        head = orjson.dumps({"v": 1, "ts": ts, **{k: v for k, v in event.items() if k not in _FALCO_MEMORY_ONLY}})
        return b"".join((head[:-1], b',"alert":', raw, b"}"))
    return orjson.dumps({"v": 1, "ts": ts, **event})


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, str) and value and value not in ("<NA>", "host"):
        return value
    return None


#: Engine actions the audit log keeps, and the priority each is logged at.
ENGINE_ACTIONS = {
    "start": "Informational",
    "die": "Notice",
    "died": "Notice",
    "oom": "Warning",
    "exec": "Notice",
    "exec_start": "Notice",
    "exec_create": "Notice",
    "exec_died": "Notice",
    "exec exit": "Notice",
    "kill": "Notice",
}


def engine_event(doc: Any) -> dict[str, Any] | None:
    """Normalize a Docker-API ``/events`` message or a podman events-file line.

    Returns None for container actions the audit log does not keep (create, cleanup, ...),
    raises MalformedEvent for things that are not engine events at all.
    """
    if not isinstance(doc, dict):
        raise MalformedEvent("an engine event must be a JSON object")
    if "Actor" in doc:  # Docker API form
        actor = doc.get("Actor")
        if not isinstance(actor, dict) or not isinstance(actor.get("Attributes", {}), dict):
            raise MalformedEvent("engine event Actor must be an object with Attributes")
        kind = doc.get("Type") or doc.get("type")
        action = doc.get("Action") or doc.get("status")
        cid = actor.get("ID") or doc.get("id")
        attrs = {str(k): str(v) for k, v in actor.get("Attributes", {}).items()}
        when = doc.get("timeNano") or doc.get("time")
        name = attrs.get("name")
        exit_code = attrs.get("exitCode") or attrs.get("containerExitCode")
    elif "Status" in doc and "Type" in doc:  # podman events file (events_logger = "file")
        kind = doc.get("Type")
        action = doc.get("Status")
        cid = doc.get("ID")
        attrs = {str(k): str(v) for k, v in (doc.get("Attributes") or {}).items()}
        when = doc.get("Time")
        name = doc.get("Name")
        code = doc.get("ContainerExitCode")
        exit_code = str(code) if code is not None else None
    else:
        raise MalformedEvent("not a Docker API or podman event")
    if kind != "container":
        return None
    if not isinstance(action, str) or not isinstance(cid, str) or not cid:
        raise MalformedEvent("engine event needs an action and a container id")
    base = action.split(":", 1)[0].strip()
    if base not in ENGINE_ACTIONS:
        return None
    base = {"died": "die", "exec_start": "exec", "exec_create": "exec", "exec_died": "exec exit"}.get(base, base)
    labels = {k: v for k, v in attrs.items() if "/" in k or k.startswith("hub.")}
    event: dict[str, Any] = {
        "kind": "engine",
        "source": "engine",
        "rule": f"container {base}",
        "priority": ENGINE_ACTIONS[base],
        "event_time": _engine_time(when),
        "summary": f"container {name or cid[:12]} {action}",
        "container_id": cid,
        "container_name": name,
        "pod": None,
        "namespace": None,
        "labels": labels,
        "fields": {"action": action, "image": attrs.get("image") or doc.get("Image") or doc.get("from"),
                   "exit_code": exit_code,
                   # 137 = killed by SIGKILL: the OOM killer's signature (or a plain kill).
                   "killed": exit_code == "137" if base in ("die", "exec exit") else None},
    }
    return event


def _engine_time(value: Any) -> str | None:
    if isinstance(value, (int, float)):
        seconds = value / 1e9 if value > 1e12 else float(value)
        return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return value
    return None


def hub_event(doc: Any) -> dict[str, Any]:
    """JupyterHub's ``server-action`` event (eventlog schema v1): start/stop of a server."""
    if not isinstance(doc, dict):
        raise MalformedEvent("a hub event must be a JSON object")
    action = doc.get("action")
    if action not in ("start", "stop"):
        raise MalformedEvent("hub event action must be 'start' or 'stop'")
    user = _text(doc.get("username"), "username")
    server = doc.get("servername", "")
    if not isinstance(server, str):
        raise MalformedEvent("servername must be a string")
    return {
        "kind": "hub",
        "source": "jupyterhub",
        "rule": f"server {action}",
        "priority": "Informational",
        "event_time": doc.get("__timestamp__") if isinstance(doc.get("__timestamp__"), str) else None,
        "summary": f"JupyterHub {action}ed server {user}/{server}",
        "user": user,
        "server": server,
        "attribution": "hub",
        "fields": {"action": action},
    }


def decision_event(doc: Any) -> dict[str, Any]:
    """A policy decision as sent by AuditDecisionListener (see decisions.py)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("allowed"), bool):
        raise MalformedEvent("a decision event needs a boolean 'allowed'")
    reasons = doc.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, dict) for r in reasons):
        raise MalformedEvent("decision reasons must be a list of objects")
    user = doc.get("user")
    if user is not None and not isinstance(user, str):
        raise MalformedEvent("decision user must be a string or null")
    allowed = doc["allowed"]
    first_rule = str(reasons[0].get("rule")) if reasons else None
    return {
        "kind": "decision",
        "source": str(doc.get("origin") or "policy"),
        "rule": "policy allow" if allowed else f"policy deny: {first_rule or 'unspecified'}",
        "priority": "Informational" if allowed else "Warning",
        "event_time": doc.get("time") if isinstance(doc.get("time"), str) else None,
        "summary": str(doc.get("message") or ("allowed" if allowed else "denied"))[:MAX_TEXT],
        "user": user,
        "server": doc.get("server") if isinstance(doc.get("server"), str) else None,
        "attribution": "decision" if user else "unattributed",
        "fields": {k: doc.get(k) for k in ("allowed", "reasons", "origin", "workload", "profile",
                                            "policy_revision", "decision_id", "seconds", "digest",
                                            "dry_run") if k in doc},
    }


def classify(doc: Any, raw: bytes | None = None) -> dict[str, Any] | None:
    """Normalize any accepted form (for the bulk path); None = known but not kept."""
    if not isinstance(doc, dict):
        raise MalformedEvent("each event must be a JSON object")
    if "output_fields" in doc or "specversion" in doc:
        return falco_event(doc, raw=raw if "specversion" not in doc else None)
    if "Actor" in doc or ("Status" in doc and "Type" in doc):
        return engine_event(doc)
    if "action" in doc and "username" in doc:
        return hub_event(doc)
    if "allowed" in doc:
        return decision_event(doc)
    raise MalformedEvent("not a Falco alert, engine event, hub event or policy decision")
