"""Typed rows the pages show: built by ``sources`` from files and the Hub API, rendered
by ``render``. Keeping them plain data lets the renderers be tested against literals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Checks:
    """Lint/test results of a revision: recorded at deploy, or measured by the dashboard."""

    lint: bool | None
    tests: bool | None
    coverage: float | None
    source: str  # "recorded at deploy" | "run by the dashboard" | "not available"
    report: str = ""


@dataclass(frozen=True)
class RevisionView:
    revision: str | None
    action: str | None = None
    time: float | None = None
    actor: str | None = None
    checks: Checks | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reason:
    rule: str
    message: str


@dataclass(frozen=True)
class DecisionRow:
    """One decision from the hub's log (either log format)."""

    time: float
    user: str | None
    origin: str
    profile: str | None
    allowed: bool
    reasons: tuple[Reason, ...]
    revision: str
    decision_id: str = ""


@dataclass(frozen=True)
class Grant:
    serial: str
    fileset: str
    mode: str
    mount_path: str
    expires: float | None


@dataclass(frozen=True)
class ServerRow:
    """A running (or starting) server and what the spawn hook applied to it."""

    user: str
    server_name: str
    ready: bool
    pending: str | None
    started: str | None
    hardening_recorded: bool
    profile: str | None = None
    revision: str | None = None
    decision_id: str | None = None
    seccomp: str | None = None
    read_only_root: bool | None = None
    no_new_privileges: bool | None = None
    capabilities_drop: tuple[str, ...] = ()
    capabilities_add: tuple[str, ...] = ()
    apparmor: str | None = None
    network_mode: str | None = None
    egress_rules: str | None = None
    egress_error: str | None = None
    storage: Grant | None = None
    grants: tuple[Grant, ...] = ()
    #: The live attestation's latest word ("attested 3 s ago: ok" / "...: drift: ruleset (...)").
    attestation: str = "not attested yet"


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: str
    kind: str
    user: str | None
    rule: str
    priority: str
    outcome: str
