"""Where the dashboard's rows come from: the policy store, the decision log, the Hub REST
API, the spawn hook's hardening records, the credentials store, the egress namespaces, the
audit log and the live attestation's latest results. Each reader is read-only and never raises for a missing or torn file: the
page shows what is there and says what is not.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..attest.status import describe, read_status
from ..errors import JovialGuardError, MalformedInput
from ..policy.decision_log import DecisionLog
from ..policy.store import PolicyStore, StoreError
from .model import AuditRow, Checks, DecisionRow, Grant, Reason, RevisionView, ServerRow
from .recorder import read_records


class CandidateInvalid(MalformedInput):
    """The dry-run candidate is not a readable policy directory; the message says why."""


@dataclass(frozen=True)
class Settings:
    """Where this hub keeps things (from the service's environment, see ``app``)."""

    state_dir: Path
    hub_api_url: str
    api_token: str
    netns_prefix: str = "jg"
    egress_pool: str = ""
    audit_dir: Path | None = None
    credentials_dir: Path | None = None

    @property
    def store_dir(self) -> Path:
        return self.state_dir / "policy-store"

    @property
    def decision_log(self) -> Path:
        return self.state_dir / "decisions.jsonl"

    @property
    def hardening_dir(self) -> Path:
        return self.state_dir / "hardening"


# -- policy ------------------------------------------------------------------------------

def current_revision(store: PolicyStore, *, measured: dict[str, Checks]) -> RevisionView:
    """The active revision with its latest deploy/rollback entry and its checks."""
    revision = store.current()
    if revision is None:
        return RevisionView(None)
    try:
        history = store.history()
    except StoreError as exc:
        return RevisionView(revision, action="history does not verify", details={"source": str(exc)})
    entry = next((e for e in reversed(history) if e.revision == revision and e.action in ("deploy", "rollback")), None)
    tested = next((e for e in reversed(history) if e.revision == revision and "tests" in e.details), None)
    if tested is not None:
        checks = Checks(bool(tested.details.get("lint")), bool(tested.details.get("tests")),
                        float(tested.details.get("coverage") or 0.0), "recorded at deploy")
    else:
        checks = measured.get(revision) or Checks(None, None, None, "not available")
    if entry is None:
        return RevisionView(revision, checks=checks)
    return RevisionView(revision, action=entry.action, time=entry.time, actor=entry.actor,
                        checks=checks, details=dict(entry.details))


def measure_checks(store: PolicyStore, revision: str) -> Checks:
    """Run lint and tests on a stored revision (revisions are content hashes: cache forever)."""
    from ..policy.cli_checks import lint_policies, test_policies

    src = store.source_dir(revision)
    lint_ok, lint_report = lint_policies(src)
    tests_ok, coverage, test_report = test_policies(src, min_coverage=90.0)
    return Checks(lint_ok, tests_ok, coverage, "run by the dashboard", (lint_report + "\n" + test_report).strip())


# -- decisions ---------------------------------------------------------------------------

def _legacy_row(doc: dict[str, Any]) -> DecisionRow | None:
    """The hub's first log format (jovial_guard.spawn.decision_log, ``version: 1``)."""
    if doc.get("version") != 1 or "allowed" not in doc:
        return None
    rules = doc.get("rules") or []
    message = str(doc.get("message") or "")
    reasons = tuple(Reason(str(r), message if i == 0 else "") for i, r in enumerate(rules))
    return DecisionRow(float(doc.get("time") or 0), doc.get("user"), str(doc.get("origin") or "?"),
                       doc.get("profile"), bool(doc["allowed"]), reasons,
                       str(doc.get("policy_revision") or "?"), str(doc.get("decision_id") or ""))


def decision_rows(path: Path, *, since: float | None = None, user: str | None = None,
                  limit: int = 500) -> list[DecisionRow]:
    """The latest ``limit`` decisions, oldest first, from either log format."""
    rows: collections.deque[DecisionRow] = collections.deque(maxlen=limit)
    log = DecisionLog(path)
    for rec in log.records(since=since, user=user):
        w = rec.input.get("workload", {}) if isinstance(rec.input, dict) else {}
        rows.append(DecisionRow(rec.time, rec.user, rec.origin, w.get("profile"), rec.allowed,
                                tuple(Reason(r.get("rule", "?"), r.get("message", "")) for r in rec.reasons),
                                rec.policy_revision, rec.decision_id))
    legacy: list[DecisionRow] = []
    try:
        with open(path) as fh:
            for line in fh:
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                row = _legacy_row(doc) if isinstance(doc, dict) else None
                if row and (since is None or row.time >= since) and (user is None or row.user == user):
                    legacy.append(row)
    except OSError:
        pass
    merged = sorted([*rows, *legacy], key=lambda r: r.time)
    return merged[-limit:]


# -- servers -----------------------------------------------------------------------------

def hub_servers(settings: Settings, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``[{user, name, ready, pending, started}]`` from the Hub REST API (service token)."""
    resp = requests.get(settings.hub_api_url.rstrip("/") + "/users", params={"state": "active"},
                        headers={"Authorization": f"token {settings.api_token}"}, timeout=timeout)
    resp.raise_for_status()
    out = []
    for user in resp.json():
        for name, server in (user.get("servers") or {}).items():
            out.append({"user": user["name"], "name": name, "ready": bool(server.get("ready")),
                        "pending": server.get("pending"), "started": server.get("started")})
    return sorted(out, key=lambda s: (s["user"], s["name"]))


def grants_by_user(credentials_dir: Path | None, *, now: float | None = None) -> dict[str, list[Grant]]:
    """Live grants per user, from the credentials' query API (clear headers only)."""
    if credentials_dir is None:
        return {}
    from ..credentials.query import live_grants_by_user

    return {user: [Grant(g.serial, g.fileset, g.mode, g.mount_path, g.expires) for g in grants]
            for user, grants in live_grants_by_user(credentials_dir, now=now).items()}


def egress_rules(settings: Settings, username: str) -> tuple[str | None, str | None]:
    """(ruleset, error) of the user's egress namespace, read live through the egress query
    API (which names the namespace with the same function the spawn hook uses).

    The dashboard's only contact with the host's network state: everything else about a
    user's egress comes from the hardening record.
    """
    from ..hardening.egress import EgressNamespaces

    try:
        namespaces = (EgressNamespaces(settings.netns_prefix, pool=settings.egress_pool) if settings.egress_pool
                      else EgressNamespaces(settings.netns_prefix))
        return namespaces.live_ruleset(username), None
    except (JovialGuardError, OSError, ValueError) as exc:
        return None, str(exc)


def server_rows(settings: Settings, servers: Iterable[dict[str, Any]], *,
                read_egress: bool = True, now: float | None = None) -> list[ServerRow]:
    records = read_records(settings.hardening_dir)
    grants = grants_by_user(settings.credentials_dir)
    attested = read_status(settings.audit_dir) if settings.audit_dir is not None else {}
    clock = time.time() if now is None else now
    rows = []
    for s in servers:
        rec = records.get((s["user"], s["name"]))
        attestation = describe(attested.get((s["user"], s["name"])), now=clock)
        if rec is None:
            rows.append(ServerRow(s["user"], s["name"], s["ready"], s["pending"], s["started"], False,
                                  grants=tuple(grants.get(s["user"], [])), attestation=attestation))
            continue
        hard = rec.get("hardening") or {}
        sec = hard.get("seccomp") or {}
        app = hard.get("apparmor") or {}
        caps = hard.get("capabilities") or {}
        storage = rec.get("storage")
        rules, error = egress_rules(settings, s["user"]) if read_egress else (None, "not read")
        rows.append(ServerRow(
            s["user"], s["name"], s["ready"], s["pending"], s["started"], True,
            profile=rec.get("profile"), revision=rec.get("policy_revision"), decision_id=rec.get("decision_id"),
            seccomp=_describe(sec), read_only_root=hard.get("read_only_root"),
            no_new_privileges=hard.get("no_new_privileges"),
            capabilities_drop=tuple(caps.get("drop") or ()), capabilities_add=tuple(caps.get("add") or ()),
            apparmor=_describe(app), network_mode=hard.get("network_mode"),
            egress_rules=rules, egress_error=error,
            storage=Grant(storage["serial"], storage["fileset"], storage["mode"], storage["mount_path"],
                          storage.get("expires")) if isinstance(storage, dict) else None,
            grants=tuple(grants.get(s["user"], [])), attestation=attestation,
        ))
    return rows


def _describe(record: Any) -> str | None:
    """``{"type": "localhost", "profile": ..., "status": ...}`` as one readable line."""
    if not isinstance(record, dict) or not record:
        return None
    return ", ".join(f"{k}: {v}" for k, v in record.items() if v not in (None, "", [], {}))


# -- audit -------------------------------------------------------------------------------

def audit_rows(directory: Path | None, *, since_hours: float = 24.0, limit: int = 200,
               now: _dt.datetime | None = None) -> list[AuditRow]:
    """The newest audit records (events and responses), newest first."""
    if directory is None or not directory.is_dir():
        return []
    from ..audit.query import Query, entries

    since = (now or _dt.datetime.now(_dt.UTC)) - _dt.timedelta(hours=since_hours)
    newest: collections.deque[AuditRow] = collections.deque(maxlen=limit)
    for entry in entries(directory, Query(since=since)):
        rule, outcome = entry.rule, ""
        if entry.response is not None:
            response = entry.response
            outcome = response.outcome
            rule = (f"{response.action or rule} by {response.response_rule or '?'}"
                    f" on {response.trigger_rule or '?'} (record {response.trigger_record or '?'})")
        newest.append(AuditRow(entry.seq, entry.ts, entry.kind, entry.user, rule, entry.priority, outcome))
    return list(reversed(newest))


# -- dry-run -----------------------------------------------------------------------------

def validate_candidate(text: str) -> Path:
    """An absolute path to an existing directory holding .rego files; refuse anything else."""
    text = (text or "").strip()
    if not text:
        raise CandidateInvalid("Enter the absolute path of a candidate policy directory.")
    if len(text) > 4096 or "\x00" in text:
        raise CandidateInvalid("That is not a usable path.")
    path = Path(text)
    if not path.is_absolute():
        raise CandidateInvalid(f"{text} is not an absolute path (it must start with /).")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise CandidateInvalid(f"{text} does not exist.") from None
    if not resolved.is_dir():
        raise CandidateInvalid(f"{text} is not a directory.")
    if not any(p.is_file() for p in resolved.rglob("*.rego")):
        raise CandidateInvalid(f"{text} holds no .rego files: not a policy directory.")
    return resolved
