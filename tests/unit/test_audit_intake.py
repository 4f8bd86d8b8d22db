"""Intake of every vector through the real HTTP service (loopback), attribution through the
real spawn registry, quarantine of malformed input, bulk NDJSON, metrics, decisions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from jovial_guard.audit.checkpoint import load_public_key
from jovial_guard.audit.decisions import AuditDecisionListener, HttpSink, LocalSink
from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.audit.verify import verify_log
from jovial_guard.decision import Decision
from jovial_guard.workload import HubUser, Workload

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "audit"
INDEX: list[dict[str, Any]] = json.loads((VECTORS / "index.json").read_text())


def raw_vector(entry: dict[str, Any]) -> bytes:
    return (VECTORS / entry["file"]).read_bytes()


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[RunningAudit]:
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0,
                                               checkpoint_interval=0.2)).start()
    for reg in json.loads((VECTORS / "registry.json").read_text()):
        running.registry.register(**reg)
    yield running
    await running.stop()


def records(running: RunningAudit, **query: Any) -> list[dict[str, Any]]:
    return list(run_query(running.service.directory, Query(**query)))


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
async def test_vector_one_per_post(audit: RunningAudit, entry: dict[str, Any]) -> None:
    expect = entry["expect"]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{audit.url}/{entry['endpoint']}", data=raw_vector(entry),
                                headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.json()
            status = resp.status
    if expect["result"] == "accepted":
        assert status == 200, answer
        (record,) = [r for r in records(audit) if r["seq"] == answer["seq"]]
        for key in ("rule", "priority", "user", "server", "attribution", "source"):
            if key in expect:
                assert record[key] == expect[key], key
    elif expect["result"] == "ignored":
        assert status == 200 and answer == {"ignored": True}
        assert not records(audit, kind="engine")
    else:
        assert status == 400 and answer["quarantined"] is True
        assert expect["reason"] in answer["error"]
        kept = [orjson.loads(line) for line in (audit.service.directory / "quarantine.ndjson").read_bytes().splitlines()]
        assert len(kept) == 1 and expect["reason"] in kept[0]["reason"]
        raw = raw_vector(entry)
        stored = kept[0].get("raw", "").encode() if "raw" in kept[0] else None
        assert stored == raw or kept[0].get("raw_b64")
        (chained,) = records(audit, kind="intake")
        assert chained["fields"]["sha256"] == kept[0]["sha256"]


async def test_bulk_ndjson_takes_every_vector_in_one_commit(audit: RunningAudit) -> None:
    lines = []
    for entry in INDEX:
        raw = raw_vector(entry)
        try:
            lines.append(orjson.dumps(orjson.loads(raw)))
        except orjson.JSONDecodeError:
            lines.append(raw)
    accepted = sum(e["expect"]["result"] == "accepted" for e in INDEX)
    quarantined = sum(e["expect"]["result"] == "quarantined" for e in INDEX)
    ignored = sum(e["expect"]["result"] == "ignored" for e in INDEX)
    batches_before = audit.service.writer.batches
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{audit.url}/bulk", data=b"\n".join(lines) + b"\n") as resp:
            assert resp.status == 200
            answer = await resp.json()
    assert answer["accepted"] == accepted and answer["quarantined"] == quarantined
    assert answer["ignored"] == ignored
    # One commit for the quarantine digests, one for the events.
    assert audit.service.writer.batches - batches_before == 2
    assert len(records(audit, kind="falco")) == 8
    assert {r["user"] for r in records(audit, rule="Terminal shell in container")} == {"alice", "bob"}
    assert len(records(audit, unattributed=True, kind="falco")) == 1
    kept = (audit.service.directory / "quarantine.ndjson").read_bytes().splitlines()
    assert len(kept) == quarantined


async def test_cloudevents_binary_mode(audit: RunningAudit) -> None:
    payload = raw_vector(next(e for e in INDEX if e["file"] == "falcosidekick/webhook.json"))
    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-type": "falco.rule.output.v1",
               "ce-source": "https://falco.org", "ce-id": "1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{audit.url}/falco", data=payload, headers=headers) as resp:
            assert resp.status == 200
        async with session.post(f"{audit.url}/falco", data=payload, headers={**headers, "ce-type": "x"}) as resp:
            assert resp.status == 400
    (record,) = records(audit, kind="falco")
    assert record["source"] == "falcosidekick-cloudevents" and record["user"] == "bob"


async def test_metrics_count_events_decisions_and_quarantine(audit: RunningAudit) -> None:
    async with aiohttp.ClientSession() as session:
        for name in ("falco/terminal_shell.json", "falco/fileless_memfd.json", "malformed/bad_time.json"):
            entry = next(e for e in INDEX if e["file"] == name)
            async with session.post(f"{audit.url}/falco", data=raw_vector(entry)):
                pass
        listener = AuditDecisionListener(HttpSink(audit.url))
        user = HubUser("alice", ("astro",))
        wl = Workload(origin="spawn", kind="Pod", name="jupyter-alice", namespace="", pod={"metadata": {}, "spec": {}},
                      user=user, extra={"server_name": ""})
        await listener(wl, Decision(True, (), None, "rev-1"), 0.004)
        await listener(wl, Decision.deny("image-not-allowed", "image evil:latest is not allowed"), 0.002)
        await listener.sink.close()  # type: ignore[attr-defined]
        assert listener.failures == 0
        async with session.get(f"{audit.url}/metrics") as resp:
            text = await resp.text()
    assert ('jovial_guard_audit_events_total{attributed="true",kind="falco",priority="Notice",'
            'rule="Terminal shell in container"} 1.0') in text
    assert 'attributed="false"' in text
    assert 'user=' not in text  # no per-user label: its cardinality grows with every user
    assert 'jovial_guard_audit_decisions_total{allowed="false",origin="spawn"} 1.0' in text
    assert 'jovial_guard_audit_denials_total{rule="image-not-allowed"} 1.0' in text
    assert 'jovial_guard_audit_quarantined_total{endpoint="falco"} 1.0' in text
    assert "jovial_guard_audit_intake_seconds_bucket" in text
    (deny,) = records(audit, kind="decision", priority="Warning")
    assert deny["user"] == "alice" and deny["fields"]["reasons"][0]["rule"] == "image-not-allowed"


async def test_local_decision_listener_with_real_policy_engine(audit: RunningAudit, opa_connection: Any) -> None:
    from jovial_guard.policy.engine import PolicyEngine

    listener = AuditDecisionListener(LocalSink(audit.service))
    engine = PolicyEngine(opa_connection, deadline=5.0, listeners=[listener])
    wl = Workload(origin="spawn", kind="Pod", name="jupyter-dora", namespace="",
                  pod={"metadata": {"name": "jupyter-dora"}, "spec": {"containers": [
                      {"name": "notebook", "image": "docker.io/evil/miner:latest"}]}},
                  user=HubUser("dora", ("astro",)))
    decision = await engine.decide(wl)
    assert listener.failures == 0
    (record,) = records(audit, kind="decision")
    assert record["user"] == "dora" and record["fields"]["allowed"] is decision.allowed
    assert record["fields"]["decision_id"] == decision.decision_id
    assert record["fields"]["policy_revision"] == decision.policy_revision


async def test_log_written_by_the_service_verifies(audit: RunningAudit) -> None:
    async with aiohttp.ClientSession() as session:
        for entry in INDEX:
            async with session.post(f"{audit.url}/{entry['endpoint']}", data=raw_vector(entry)):
                pass
    await audit.service.writer.close()
    key = load_public_key(audit.service.directory / "keys" / "signing.pub")
    report = verify_log(audit.service.directory, key, workers=1)
    assert report.records == audit.service.log.size and report.unsigned_tail == 0


async def test_large_bulk_is_prepared_in_worker_processes(audit: RunningAudit) -> None:
    from jovial_guard.audit.server import BULK_POOL_MIN_LINES

    good = [orjson.dumps(orjson.loads(raw_vector(e))) for e in INDEX
            if e["expect"]["result"] == "accepted" and e["endpoint"] == "falco"]
    n = BULK_POOL_MIN_LINES * 8
    lines = [good[i % len(good)] for i in range(n)]
    lines[100] = b'{"rule": "half an alert'
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{audit.url}/bulk", data=b"\n".join(lines)) as resp:
            assert resp.status == 200
            answer = await resp.json()
    assert audit.service._pool is not None  # the worker path was taken
    assert answer["accepted"] == n - 1 and answer["quarantined"] == 1
    falco = records(audit, kind="falco")
    assert len(falco) == n - 1
    # Same attribution as the in-process path (workers read the same registry).
    assert {r["user"] for r in falco if r["rule"] == "Terminal shell in container"} == {"alice", "bob"}
    await audit.service.writer.close()
    key = load_public_key(audit.service.directory / "keys" / "signing.pub")
    assert verify_log(audit.service.directory, key, workers=1).records == audit.service.log.size


async def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0, token="s3cret")).start()
    body = raw_vector(INDEX[0])
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{running.url}/falco", data=body) as resp:
                assert resp.status == 401
            async with session.post(f"{running.url}/falco", data=body,
                                    headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with session.post(f"{running.url}/falco", data=body,
                                    headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
    finally:
        await running.stop()
    assert len(list(run_query(running.service.directory, Query(kind="falco")))) == 1


def test_register_spawner_from_dockerspawner_state(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from jovial_guard.audit.hub_registry import register_spawner
    from jovial_guard.audit.registry import SpawnRegistry

    registry = SpawnRegistry(tmp_path / "spawns.sqlite")
    cid = "ab" * 32
    spawner = SimpleNamespace(user=SimpleNamespace(name="erin"), name="big",
                              get_state=lambda: {"object_id": cid, "object_name": "jupyter-erin-big"})
    register_spawner(registry, spawner, netns="jg-u-erin")
    owner = registry.lookup(container_id=cid[:12])
    assert owner is not None and (owner.user, owner.server, owner.netns) == ("erin", "big", "jg-u-erin")
    assert registry.lookup(container_name="jupyter-erin-big") == owner
    registry.mark_stopped(user="erin", server="big")
    assert registry.containers_of("erin") == []
    assert registry.lookup(container_id=cid) is not None  # late events still attributed


def test_spawn_registrar_registers_a_dockerspawner_before_start(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dockerspawner import DockerSpawner

    from jovial_guard.audit.hub_registry import SpawnRegistrar

    spawner = DockerSpawner(name_template="jupyter-{username}")
    spawner.user = SimpleNamespace(name="frank", id=7, url="/user/frank/", escaped_name="frank", server=None)
    record = {"hardening": {"network_mode": "ns:/run/netns/jg-u-frank"}}  # as JovialGuard hands it over
    registrar = SpawnRegistrar(tmp_path / "spawns.sqlite")
    registrar(spawner, record)
    owner = registrar.registry.lookup(container_name="jupyter-frank")
    assert owner is not None and (owner.user, owner.server, owner.netns) == ("frank", "", "jg-u-frank")
    registrar(spawner, {"hardening": {"network_mode": "none"}})
    assert registrar.registry.lookup(container_name="jupyter-frank").netns is None  # type: ignore[union-attr]
