"""Responses: rules file validation, matching, dry run, per-user rate limits, notify to a
real loopback webhook, storage revocation through the real credentials issuer, and every
action audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.responses import RulesInvalid, parse_rules
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.credentials.issuer import Issuer

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "audit"
REVERSE_SHELL = (VECTORS / "falco" / "reverse_shell.json").read_bytes()
MEMFD = (VECTORS / "falco" / "fileless_memfd.json").read_bytes()
SHELL = (VECTORS / "falco" / "terminal_shell.json").read_bytes()


def rules_yaml(**overrides: Any) -> str:
    doc: dict[str, Any] = {
        "version": 1,
        "dry_run": False,
        "rate_limit": {"max_responses": 2, "per_seconds": 600},
        "rules": [
            {"name": "reverse-shell", "match": {"rules": ["Redirect STDOUT/STDIN to Network Connection in Container"]},
             "actions": ["notify", "revoke_storage"]},
            {"name": "critical", "match": {"min_priority": "Critical", "kinds": ["falco"]}, "actions": ["notify"]},
        ],
    }
    doc.update(overrides)
    return json.dumps(doc)  # JSON is YAML


@pytest.mark.parametrize("doc, message", [
    ({"version": 2}, "version: 1"),
    ({"version": 1, "rules": [{"name": "x", "match": {}, "actions": ["notify"]}]}, "empty match"),
    ({"version": 1, "rules": [{"name": "x", "match": {"rules": ["a"]}, "actions": ["format_disk"]}]}, "actions"),
    ({"version": 1, "rules": [{"name": "x", "match": {"min_priority": "Severe"}, "actions": ["notify"]}]}, "priority"),
    ({"version": 1, "rules": [{"name": "x", "match": {"rule_pattern": "("}, "actions": ["notify"]}]}, "rule 'x'"),
    ({"version": 1, "notify": {"webhook": "http://192.0.2.1/hook"}}, "loopback"),
    ({"version": 1, "notify": {"webhook": "http://example.org/hook"}}, "loopback"),
    ({"version": 1, "rate_limit": {"max_responses": 0}}, "max_responses"),
    ({"version": 1, "surprise": True}, "unknown"),
])
def test_invalid_rules_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesInvalid, match=message):
        parse_rules(doc)


def test_matching() -> None:
    config = parse_rules(json.loads(rules_yaml()))
    shell, critical = config.rules
    event = {"kind": "falco", "rule": "Redirect STDOUT/STDIN to Network Connection in Container", "priority": "Notice"}
    assert shell.match.matches(event) and not critical.match.matches(event)
    assert critical.match.matches({"kind": "falco", "rule": "x", "priority": "Emergency"})
    assert not critical.match.matches({"kind": "engine", "rule": "x", "priority": "Critical"})
    assert not critical.match.matches({"kind": "falco", "rule": "x", "priority": "Error"})


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


async def start_audit(tmp_path: Path, rules: str, **settings: Any) -> RunningAudit:
    rules_path = tmp_path / "responses.yaml"
    rules_path.write_text(rules)
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0, rules_path=rules_path,
                                               **settings)).start()
    running.registry.register(user="alice", server="", container_id="3f2a1b4c5d6e" + "0" * 52,
                              container_name="jupyter-alice")
    return running


async def post(url: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/falco", data=body) as resp:
            return resp.status


def responses(running: RunningAudit) -> list[dict[str, Any]]:
    return list(run_query(running.service.directory, Query(kind="response")))


async def test_responses_run_and_are_audited(tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    issuer = Issuer.from_directory(tmp_path / "creds" / "state", create=True)
    grant = issuer.issue(user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw",
                         mount_path="/lustre/home").grant
    running = await start_audit(tmp_path, rules_yaml(notify={"webhook": url}),
                                credentials_state=tmp_path / "creds" / "state")
    try:
        assert await post(running.url, REVERSE_SHELL) == 200
        await running.responder.drain()  # type: ignore[union-attr]
    finally:
        await running.stop()
    by_action = {r["fields"]["action"]: r for r in responses(running)}
    assert by_action["notify"]["fields"]["outcome"] == "done"
    assert by_action["revoke_storage"]["fields"]["outcome"] == "done"
    assert grant.serial in by_action["revoke_storage"]["fields"]["detail"]
    assert all(r["user"] == "alice" for r in by_action.values())
    trigger = by_action["notify"]["fields"]["trigger_record"]
    assert [r for r in run_query(running.service.directory, Query(kind="falco"))][0]["seq"] == trigger
    assert received and received[0]["user"] == "alice" and received[0]["record"] == trigger
    # The issuer (a fresh instance reading the persisted list) refuses the grant now.
    revoked = Issuer.from_directory(tmp_path / "creds" / "state").revocations.get(grant.serial)
    assert revoked is not None and "reverse-shell" in revoked.reason


async def test_dry_run_records_without_acting(tmp_path: Path) -> None:
    issuer = Issuer.from_directory(tmp_path / "creds" / "state", create=True)
    grant = issuer.issue(user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw",
                         mount_path="/lustre/home").grant
    running = await start_audit(tmp_path, rules_yaml(dry_run=True), credentials_state=tmp_path / "creds" / "state")
    try:
        assert await post(running.url, REVERSE_SHELL) == 200
        await running.responder.drain()  # type: ignore[union-attr]
    finally:
        await running.stop()
    assert {r["fields"]["outcome"] for r in responses(running)} == {"dry-run"}
    assert Issuer.from_directory(tmp_path / "creds" / "state").revocations.get(grant.serial) is None


async def test_per_user_rate_limit(tmp_path: Path) -> None:
    running = await start_audit(tmp_path, rules_yaml())
    try:
        for _ in range(4):
            assert await post(running.url, REVERSE_SHELL) == 200
            await running.responder.drain()  # type: ignore[union-attr]
    finally:
        await running.stop()
    notify = [r["fields"]["outcome"] for r in responses(running) if r["fields"]["action"] == "notify"]
    assert notify == ["done", "done", "rate-limited", "rate-limited"]


async def test_unattributed_events_only_notify(tmp_path: Path) -> None:
    running = await start_audit(tmp_path, rules_yaml(rules=[
        {"name": "memfd", "match": {"rules": ["Fileless execution via memfd_create"]},
         "actions": ["notify", "stop_server", "cut_network"]}]))
    try:
        assert await post(running.url, MEMFD) == 200
        await running.responder.drain()  # type: ignore[union-attr]
    finally:
        await running.stop()
    outcomes = {r["fields"]["action"]: r["fields"]["outcome"] for r in responses(running)}
    assert outcomes == {"notify": "done", "stop_server": "skipped", "cut_network": "skipped"}


async def test_failed_action_is_audited_not_raised(tmp_path: Path) -> None:
    # A hub that is not there: the stop fails, the failure is a record, intake goes on.
    running = await start_audit(tmp_path, rules_yaml(rules=[
        {"name": "shell", "match": {"rules": ["Terminal shell in container"]}, "actions": ["stop_server"]}]),
        hub_api_url="http://127.0.0.1:9/hub/api", hub_token="x")
    try:
        assert await post(running.url, SHELL) == 200
        await running.responder.drain()  # type: ignore[union-attr]
        assert await post(running.url, SHELL) == 200
    finally:
        await running.stop()
    first = responses(running)[0]
    assert first["fields"]["action"] == "stop_server" and first["fields"]["outcome"] == "failed"
