"""Policy lifecycle: dry-run a candidate against recorded traffic, deploy it, roll back.

The question a security admin asks before a deploy is "whom does this lock out, and what
does it let through?". ``dry_run`` answers it from the decision log, with two real OPAs
(the deployed policy and the candidate). ``deploy`` refuses a candidate whose lint or
tests fail (nothing changes), activates it as a new signed revision (OPA swaps bundles
atomically), waits until OPA reports it, probes it with a known-good and a known-bad
workload, and rolls back by itself when the probe fails. Every step lands in the store's
hash-chained history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decision import Decision
from ..errors import Denied, JovialGuardError, PolicyEngineUnavailable, Unavailable
from .cli_checks import lint_policies, test_policies
from .client import OpaConnection, OpaEndpoint
from .decision_log import DecisionRecord
from .opa_process import ManagedOpa
from .probes import KNOWN_BAD, KNOWN_GOOD
from .store import PolicyStore

Say = Callable[[str], None]
#: Makes an activated revision's signed bundle reach the OPAs beyond this store's own
#: bundle server (e.g. a cluster ConfigMap): (revision, bundle bytes).
Publish = Callable[[str, bytes], None]
#: Waits until every replica serves a revision, as the bundle service saw it (replicas
#: whose OPA cannot be reached directly): (revision, timeout) -> seconds.
WaitReplicas = Callable[[str, float], Awaitable[float]]
#: Extra health probe of a revision once every replica serves it (e.g. dry-run pods
#: through the API server): revision -> problems.
ExtraProbe = Callable[[str], Awaitable[list[str]]]


class DeployRefused(Denied):
    """The candidate failed its checks; nothing was changed."""


class DeployRolledBack(Unavailable):
    """The candidate went live, failed its health probe and was rolled back."""


@dataclass(frozen=True)
class Change:
    user: str | None
    workload: str
    before: bool
    after: bool
    reasons_before: list[dict[str, str]]
    reasons_after: list[dict[str, str]]

    @property
    def direction(self) -> str:
        return "allowed -> denied" if self.before and not self.after else "denied -> allowed"


@dataclass
class DryRunReport:
    inputs: int = 0
    unchanged: int = 0
    changes: list[Change] = field(default_factory=list)
    errors: int = 0

    @property
    def newly_denied(self) -> list[Change]:
        return [c for c in self.changes if c.before and not c.after]

    @property
    def newly_allowed(self) -> list[Change]:
        return [c for c in self.changes if not c.before and c.after]

    def summary(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "unchanged": self.unchanged,
            "newly_denied": sorted({c.user or "?" for c in self.newly_denied}),
            "newly_allowed": sorted({c.user or "?" for c in self.newly_allowed}),
            "changes": len(self.changes),
            "errors": self.errors,
        }

    def lines(self) -> list[str]:
        out = [f"dry-run: {self.inputs} recorded workloads, {len(self.changes)} would change, {self.unchanged} unchanged"]
        for change in self.changes:
            out.append(f"  {change.direction}: user={change.user} workload={change.workload}")
            for reason in change.reasons_after or change.reasons_before:
                out.append(f"      [{reason['rule']}] {reason['message']}")
        if self.errors:
            out.append(f"  {self.errors} inputs could not be decided (see the policy engine)")
        return out


async def decide_input(connection: OpaConnection, input_doc: dict[str, Any]) -> Decision:
    """Decide a raw OPA input (a recorded one) on a connection; fail closed like the engine."""
    try:
        return Decision.from_opa(await connection.query("jovial_guard.main", "decision", input_doc))
    except PolicyEngineUnavailable as exc:
        return Decision.deny("policy-engine-unavailable", str(exc))


def _workload_label(input_doc: dict[str, Any]) -> str:
    w = input_doc.get("workload", {})
    return f"{w.get('origin')}:{w.get('kind')}/{w.get('namespace')}/{w.get('name')} profile={w.get('profile') or 'default'}"


def unique_latest(records: Iterable[DecisionRecord]) -> list[DecisionRecord]:
    """One record per distinct input (the latest), oldest first."""
    latest: dict[str, DecisionRecord] = {}
    for record in records:
        latest[record.input_digest] = record
    return sorted(latest.values(), key=lambda r: r.time)


async def dry_run(records: Iterable[DecisionRecord], *, baseline: Path, candidate: Path) -> DryRunReport:
    """Decide every recorded input with the baseline and the candidate policy."""
    report = DryRunReport()
    inputs = unique_latest(records)
    report.inputs = len(inputs)
    if not inputs:
        return report
    with ManagedOpa(baseline) as base_opa, ManagedOpa(candidate) as cand_opa:
        async with OpaConnection(OpaEndpoint(base_opa.url), timeout=10) as base, OpaConnection(OpaEndpoint(cand_opa.url), timeout=10) as cand:
            for record in inputs:
                before, after = await asyncio.gather(decide_input(base, record.input), decide_input(cand, record.input))
                if any(r.rule == "policy-engine-unavailable" for r in (*before.reasons, *after.reasons)):
                    report.errors += 1
                if before.allowed == after.allowed:
                    report.unchanged += 1
                    continue
                report.changes.append(Change(
                    user=record.user,
                    workload=_workload_label(record.input),
                    before=before.allowed,
                    after=after.allowed,
                    reasons_before=[r.to_json() for r in before.reasons],
                    reasons_after=[r.to_json() for r in after.reasons],
                ))
    return report


async def wait_for_revision(endpoint: OpaEndpoint, revision: str, *, timeout: float = 10.0) -> float:
    """Seconds until OPA reports ``revision``; raise PolicyEngineUnavailable past timeout."""
    start = time.monotonic()
    async with OpaConnection(endpoint, timeout=2.0) as conn:
        while True:
            try:
                if await conn.get_data("jovial_guard_meta/revision") == revision:
                    return time.monotonic() - start
            except PolicyEngineUnavailable:
                pass
            if time.monotonic() - start > timeout:
                raise PolicyEngineUnavailable(f"OPA did not switch to revision {revision} within {timeout:g}s")
            await asyncio.sleep(0.02)


async def probe(endpoint: OpaEndpoint, revision: str) -> list[str]:
    """Problems found when asking OPA about a known-good and a known-bad workload."""
    problems = []
    async with OpaConnection(endpoint, timeout=5.0) as conn:
        good = await decide_input(conn, KNOWN_GOOD.to_input())
        bad = await decide_input(conn, KNOWN_BAD.to_input())
    if not good.allowed:
        problems.append(f"known-good notebook was denied: {good.message()}")
    if bad.allowed:
        problems.append("known-bad privileged pod was allowed")
    for decision in (good, bad):
        if decision.policy_revision != revision:
            problems.append(f"decision came from revision {decision.policy_revision}, expected {revision}")
    return problems


def _endpoints(endpoint: OpaEndpoint | Sequence[OpaEndpoint]) -> list[OpaEndpoint]:
    return [endpoint] if isinstance(endpoint, OpaEndpoint) else list(endpoint)


def _activate(store: PolicyStore, revision: str, publish: Publish | None) -> None:
    store.activate(revision)
    if publish is not None:
        publish(revision, store.bundle_path(revision).read_bytes())


async def switch_all(endpoints: Sequence[OpaEndpoint], revision: str, *, timeout: float = 10.0) -> float:
    """Seconds until *every* OPA (one per webhook replica) serves ``revision``."""
    waits = await asyncio.gather(*(wait_for_revision(e, revision, timeout=timeout) for e in endpoints))
    return max(waits, default=0.0)


async def probe_all(endpoints: Sequence[OpaEndpoint], revision: str) -> list[str]:
    """Every OPA's probe problems, each named by its OPA when there are several."""
    problems: list[str] = []
    for e in endpoints:
        found = await probe(e, revision)
        problems += [f"{e.url}: {p}" if len(endpoints) > 1 else p for p in found]
    return problems


async def deploy(
    store: PolicyStore,
    candidate: Path,
    *,
    endpoint: OpaEndpoint | Sequence[OpaEndpoint],
    publish: Publish | None = None,
    wait_replicas: WaitReplicas | None = None,
    extra_probe: ExtraProbe | None = None,
    records: Iterable[DecisionRecord] = (),
    min_coverage: float = 90.0,
    say: Say = print,
    actor: str | None = None,
    switch_timeout: float = 10.0,
) -> str:
    """Check, activate, verify; roll back on a failed probe. Returns the new revision."""
    previous = store.current()
    lint_ok, lint_report = lint_policies(candidate)
    tests_ok, coverage, test_report = test_policies(candidate, min_coverage=min_coverage)
    say(f"lint: {'ok' if lint_ok else 'FAILED'}")
    say(f"tests: {'ok' if tests_ok else 'FAILED'} (coverage {coverage:.1f}%, minimum {min_coverage:.1f}%)")
    checks = {"lint": lint_ok, "tests": tests_ok, "coverage": round(coverage, 2)}
    if not (lint_ok and tests_ok):
        store.record("refused", "-", previous=previous, details={**checks, "report": (lint_report + "\n" + test_report)[-4000:]}, actor=actor)
        raise DeployRefused("candidate failed " + " and ".join(n for n, ok in (("lint", lint_ok), ("tests", tests_ok)) if not ok) + "; nothing was changed:\n" + (lint_report if not lint_ok else test_report))
    baseline = store.source_dir(previous) if previous else candidate
    report = await dry_run(records, baseline=baseline, candidate=candidate)
    for line in report.lines():
        say(line)
    revision = store.add(candidate)
    endpoints = _endpoints(endpoint)
    _activate(store, revision, publish)
    try:
        switch = await switch_all(endpoints, revision, timeout=switch_timeout)
        if wait_replicas is not None:
            switch = max(switch, await wait_replicas(revision, switch_timeout))
        problems = await probe_all(endpoints, revision)
        if extra_probe is not None:
            problems += await extra_probe(revision)
    except PolicyEngineUnavailable as exc:
        switch, problems = float("nan"), [str(exc)]
    if problems:
        detail = "; ".join(problems)
        if previous:
            _activate(store, previous, publish)
            try:
                await switch_all(endpoints, previous, timeout=switch_timeout)
                if wait_replicas is not None:
                    await wait_replicas(previous, switch_timeout)
            except PolicyEngineUnavailable as exc:
                detail += f"; rollback not yet confirmed by OPA: {exc}"
        store.record("auto-rollback", revision, previous=previous, details={**checks, "problems": problems, "dry_run": report.summary()}, actor=actor)
        raise DeployRolledBack(f"revision {revision} failed its health probe ({detail}); rolled back to {previous}")
    store.record("deploy", revision, previous=previous, details={**checks, "dry_run": report.summary(), "switch_seconds": round(switch, 3)}, actor=actor)
    say(f"deployed {revision} (OPA switched in {switch:.2f}s; previous {previous})")
    return revision


async def rollback(store: PolicyStore, *, endpoint: OpaEndpoint | Sequence[OpaEndpoint], revision: str | None = None, say: Say = print,
                   actor: str | None = None, publish: Publish | None = None, wait_replicas: WaitReplicas | None = None,
                   extra_probe: ExtraProbe | None = None) -> str:
    """Re-activate ``revision`` (default: the one before the current), verified and probed."""
    current = store.current()
    if revision is None:
        deployed = [e for e in store.history() if e.action in ("deploy", "rollback") and e.revision == current]
        revision = deployed[-1].previous if deployed else None
        if not revision:
            raise JovialGuardError("nothing to roll back to: no earlier revision is recorded")
    endpoints = _endpoints(endpoint)
    _activate(store, revision, publish)
    switch = await switch_all(endpoints, revision)
    if wait_replicas is not None:
        switch = max(switch, await wait_replicas(revision, 10.0))
    problems = await probe_all(endpoints, revision)
    if extra_probe is not None:
        problems += await extra_probe(revision)
    if problems:
        raise JovialGuardError(f"rolled back to {revision}, but its probe reports: {'; '.join(problems)}")
    store.record("rollback", revision, previous=current, details={"switch_seconds": round(switch, 3)}, actor=actor)
    say(f"rolled back to {revision} (OPA switched in {switch:.2f}s)")
    return revision
