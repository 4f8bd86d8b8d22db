"""Responses: a readable YAML rules file maps committed audit events to actions.

Example (``docs/audit.md`` has the full reference)::

    version: 1
    dry_run: false
    rate_limit: {max_responses: 3, per_seconds: 300}     # per hub user
    notify: {webhook: http://127.0.0.1:9099/alerts}      # loopback only; optional
    rules:
      - name: reverse-shell
        match:
          rules: ["Redirect STDOUT/STDIN to Network Connection in Container"]
        actions: [notify, cut_network, stop_server, revoke_storage]
      - name: anything-critical
        match: {min_priority: Critical}
        actions: [notify, stop_server]

Match keys (all optional, all must hold): ``kinds`` (falco, engine, hub, decision, attestation),
``rules`` (exact names), ``rule_pattern`` (regex), ``min_priority``, ``users``.
Only attributed events trigger actions on a user (there is no user to act on otherwise);
``notify`` also runs for unattributed events. Response events never trigger responses.

Each triggered action is recorded as a ``response`` event with its outcome: ``done``,
``dry-run``, ``rate-limited``, ``skipped`` (nothing to act on) or ``failed``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import yaml

from ..errors import JovialGuardError, Misconfigured, Unavailable
from .entries import ResponseRecord
from .events import PRIORITIES, canonical_priority

log = logging.getLogger(__name__)

ACTION_NAMES = ("notify", "stop_server", "revoke_storage", "cut_network")


class RulesInvalid(Misconfigured, ValueError):
    """The responses file is not valid; the message names the rule and the field."""


class ActionSkipped(JovialGuardError):
    """Nothing to act on (e.g. no registered container for the user): recorded as skipped.

    Not a failure of any kind; the responder records it and moves on.
    """


@dataclass(frozen=True)
class Match:
    kinds: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    rule_pattern: re.Pattern[str] | None = None
    min_priority: int | None = None
    users: frozenset[str] = frozenset()

    def matches(self, event: dict[str, Any]) -> bool:
        if self.kinds and event.get("kind") not in self.kinds:
            return False
        rule = str(event.get("rule") or "")
        if self.rules and rule not in self.rules:
            return False
        if self.rule_pattern is not None and not self.rule_pattern.search(rule):
            return False
        if self.min_priority is not None:
            prio = event.get("priority")
            if prio not in PRIORITIES or PRIORITIES.index(prio) > self.min_priority:
                return False
        if self.users and event.get("user") not in self.users:
            return False
        return True


@dataclass(frozen=True)
class ResponseRule:
    name: str
    match: Match
    actions: tuple[str, ...]


@dataclass(frozen=True)
class ResponseConfig:
    rules: tuple[ResponseRule, ...]
    dry_run: bool = False
    max_responses: int = 3
    per_seconds: float = 300.0
    notify_webhook: str | None = None


def _loopback_url(url: Any, *, what: str) -> str:
    if not isinstance(url, str):
        raise RulesInvalid(f"{what} must be a URL string")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise RulesInvalid(f"{what} must be http(s), not {url!r}")
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise RulesInvalid(f"{what} must point at loopback (127.0.0.0/8, ::1), not {host}")
        except ValueError as exc:
            raise RulesInvalid(f"{what} must use a loopback IP address or localhost, not {host!r}") from exc
    return url


def parse_rules(doc: Any) -> ResponseConfig:
    """Validate a rules document (already YAML-loaded). Raises RulesInvalid."""
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise RulesInvalid("responses file must be a mapping with 'version: 1'")
    unknown = set(doc) - {"version", "dry_run", "rate_limit", "notify", "rules"}
    if unknown:
        raise RulesInvalid(f"unknown top-level keys: {sorted(unknown)}")
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise RulesInvalid("dry_run must be true or false")
    limit = doc.get("rate_limit", {}) or {}
    if not isinstance(limit, dict):
        raise RulesInvalid("rate_limit must be a mapping")
    max_responses = limit.get("max_responses", 3)
    per_seconds = limit.get("per_seconds", 300)
    if not isinstance(max_responses, int) or max_responses < 1:
        raise RulesInvalid("rate_limit.max_responses must be a positive integer")
    if not isinstance(per_seconds, (int, float)) or per_seconds <= 0:
        raise RulesInvalid("rate_limit.per_seconds must be a positive number")
    notify = doc.get("notify", {}) or {}
    webhook = _loopback_url(notify["webhook"], what="notify.webhook") if notify.get("webhook") else None
    rules = []
    names = set()
    for index, raw in enumerate(doc.get("rules") or []):
        where = f"rules[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise RulesInvalid(f"{where} needs a name")
        where = f"rule {raw['name']!r}"
        if raw["name"] in names:
            raise RulesInvalid(f"{where} is defined twice")
        names.add(raw["name"])
        m = raw.get("match") or {}
        if not isinstance(m, dict):
            raise RulesInvalid(f"{where}: match must be a mapping")
        bad = set(m) - {"kinds", "rules", "rule_pattern", "min_priority", "users"}
        if bad:
            raise RulesInvalid(f"{where}: unknown match keys {sorted(bad)}")
        for key in ("kinds", "rules", "users"):
            if key in m and (not isinstance(m[key], list) or not all(isinstance(v, str) for v in m[key])):
                raise RulesInvalid(f"{where}: match.{key} must be a list of strings")
        try:
            pattern = re.compile(m["rule_pattern"]) if m.get("rule_pattern") else None
            min_priority = PRIORITIES.index(canonical_priority(m["min_priority"])) if "min_priority" in m else None
        except (re.error, ValueError) as exc:
            raise RulesInvalid(f"{where}: {exc}") from exc
        if not m:
            raise RulesInvalid(f"{where}: an empty match would act on every event; say what to match")
        actions = raw.get("actions")
        if not isinstance(actions, list) or not actions or any(a not in ACTION_NAMES for a in actions):
            raise RulesInvalid(f"{where}: actions must be a non-empty list of {', '.join(ACTION_NAMES)}")
        rules.append(ResponseRule(
            name=raw["name"],
            match=Match(kinds=frozenset(m.get("kinds", ())), rules=frozenset(m.get("rules", ())),
                        rule_pattern=pattern, min_priority=min_priority, users=frozenset(m.get("users", ()))),
            actions=tuple(actions),
        ))
    return ResponseConfig(rules=tuple(rules), dry_run=dry_run, max_responses=max_responses,
                          per_seconds=float(per_seconds), notify_webhook=webhook)


def load_rules(path: str | Path) -> ResponseConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesInvalid(f"cannot read responses file {path}: {exc}") from exc
    return parse_rules(doc)


# -- actions ----------------------------------------------------------------------------------
@dataclass
class ActionContext:
    event: dict[str, Any]
    seq: int
    rule: ResponseRule
    user: str | None
    server: str | None


class Action(Protocol):
    name: str

    async def run(self, ctx: ActionContext) -> str:
        """Do it; return a short detail. Raise ActionSkipped if there is nothing to act on."""
        ...


class GrantRevoker(Protocol):
    """What revoke_storage needs: jovial_guard.credentials.issuer.Issuer satisfies it."""

    def revoke(self, *, user: str | None = None, serial: str | None = None, reason: str) -> list[str]: ...


class NetworkCutter(Protocol):
    """Cut a user's container off the network (see NftNetworkCutter)."""

    async def cut(self, *, user: str, server: str | None) -> str: ...


class NotifyAction:
    name = "notify"

    def __init__(self, webhook: str | None = None, *, timeout: float = 5.0) -> None:
        self.webhook = _loopback_url(webhook, what="notify webhook") if webhook else None
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def run(self, ctx: ActionContext) -> str:
        log.warning("audit response %s: %s (user=%s, record %d)", ctx.rule.name, ctx.event.get("rule"),
                    ctx.user, ctx.seq)
        if self.webhook is None:
            return "logged"
        payload = {"response_rule": ctx.rule.name, "record": ctx.seq, "user": ctx.user, "server": ctx.server,
                   "rule": ctx.event.get("rule"), "priority": ctx.event.get("priority"),
                   "summary": ctx.event.get("summary")}
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            async with session.post(self.webhook, json=payload) as resp:
                if resp.status >= 300:
                    raise Unavailable(f"notify webhook answered {resp.status}")
        return f"posted to {self.webhook}"


class HubStopServerAction:
    """Stop the user's server through the JupyterHub REST API (needs a token with admin:servers)."""

    name = "stop_server"

    def __init__(self, hub_api_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.api = hub_api_url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def run(self, ctx: ActionContext) -> str:
        if not ctx.user:
            raise ActionSkipped("event is not attributed to a hub user")
        user = quote(ctx.user, safe="")
        path = f"/users/{user}/servers/{quote(ctx.server, safe='')}" if ctx.server else f"/users/{user}/server"
        headers = {"Authorization": f"token {self.token}"}
        async with aiohttp.ClientSession(timeout=self.timeout, headers=headers) as session:
            async with session.delete(self.api + path) as resp:
                body = (await resp.text())[:300]
                if resp.status in (202, 204):
                    return f"hub accepted stop ({resp.status})"
                if resp.status == 400 and "not running" in body:
                    raise ActionSkipped("server is not running")
                raise Unavailable(f"hub answered {resp.status}: {body}")


class RevokeStorageAction:
    name = "revoke_storage"

    def __init__(self, revoker: GrantRevoker) -> None:
        self.revoker = revoker

    async def run(self, ctx: ActionContext) -> str:
        if not ctx.user:
            raise ActionSkipped("event is not attributed to a hub user")
        reason = f"audit response {ctx.rule.name}: {ctx.event.get('rule')} (audit record {ctx.seq})"
        serials = await asyncio.to_thread(self.revoker.revoke, user=ctx.user, reason=reason)
        if not serials:
            raise ActionSkipped("user holds no storage grant")
        return f"revoked {len(serials)} grant(s): {', '.join(serials)}"


class CutNetworkAction:
    name = "cut_network"

    def __init__(self, cutter: NetworkCutter) -> None:
        self.cutter = cutter

    async def run(self, ctx: ActionContext) -> str:
        if not ctx.user:
            raise ActionSkipped("event is not attributed to a hub user")
        return await self.cutter.cut(user=ctx.user, server=ctx.server)


# -- the responder ----------------------------------------------------------------------------
RecordFn = Callable[[dict[str, Any]], Any]


@dataclass
class Responder:
    """Observes committed events (AuditService.observers) and runs matching rules' actions."""

    config: ResponseConfig
    actions: dict[str, Action]
    record: RecordFn
    clock: Callable[[], float] = time.monotonic
    _history: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def observe(self, event: dict[str, Any], seq: int) -> None:
        if event.get("kind") in ("response", "system", "intake"):
            return
        for rule in self.config.rules:
            if rule.match.matches(event):
                task = asyncio.get_running_loop().create_task(self._respond(rule, event, seq))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _allow(self, user: str) -> bool:
        window = self._history[user]
        now = self.clock()
        while window and now - window[0] >= self.config.per_seconds:
            window.popleft()
        if len(window) >= self.config.max_responses:
            return False
        window.append(now)
        return True

    async def _respond(self, rule: ResponseRule, event: dict[str, Any], seq: int) -> None:
        user = event.get("user")
        server = event.get("server")
        # Unattributed events share one bucket, so a flood of them cannot flood notify either.
        limited = not self._allow(str(user) if user else "(unattributed)")
        for name in rule.actions:
            if not user and name != "notify":
                outcome, detail = "skipped", "event is not attributed to a hub user"
            elif limited:
                outcome, detail = "rate-limited", (f"more than {self.config.max_responses} responses for "
                                                   f"{user} in {self.config.per_seconds:g}s")
            elif self.config.dry_run:
                outcome, detail = "dry-run", "would run"
            elif name not in self.actions:
                outcome, detail = "failed", f"action {name} is not configured on this service"
            else:
                try:
                    detail = await self.actions[name].run(ActionContext(event, seq, rule, user, server))
                    outcome = "done"
                except ActionSkipped as exc:
                    outcome, detail = "skipped", str(exc)
                except Exception as exc:  # noqa: BLE001 - a failed action is recorded, not raised
                    outcome, detail = "failed", f"{type(exc).__name__}: {exc}"[:500]
            response = {
                "kind": "response", "source": "responder", "rule": f"response {name}",
                "priority": "Warning" if outcome in ("done", "failed") else "Notice",
                "summary": f"{rule.name}: {name} {outcome} ({detail})",
                "user": user, "server": server,
                "attribution": event.get("attribution") or "unattributed",
                "fields": ResponseRecord(
                    response_rule=rule.name, action=name, outcome=outcome, detail=detail,
                    trigger_rule=event.get("rule"), trigger_record=seq,
                ).to_fields(),
            }
            try:
                result = self.record(response)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # the response record is lost, the event is not
                log.exception("could not record response %s for record %d", name, seq)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for running responses (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
