"""The batch entry point decides exactly as the single decision, on a real OPA.

``PolicyEngine.decide_batch`` (used by ``jovial-guard check``) asks
``data.jovial_guard.batch.decisions`` for many inputs at once. These tests hold it to the
single-decision path over the test corpus: the raw answers are compared byte for byte, the
parsed decisions field by field, and the failure paths stay closed.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from jovial_guard.decision import ENGINE_UNAVAILABLE, Decision
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.client import OpaConnection, OpaEndpoint, encode_input
from jovial_guard.policy.engine import BATCH_PACKAGE, BATCH_RULE, DECISION_PACKAGE, DECISION_RULE, PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, free_loopback_port
from jovial_guard.workload import Workload

from tests.conftest import FIXTURES, load_documents

EXPECT = "test.jovial-guard.io/expect"


def corpus() -> list[Workload]:
    """Every PSS fixture document, as decided from each enforcement point."""
    workloads = []
    for path in sorted((FIXTURES / "pss").glob("*.yaml")):
        for doc in load_documents(path):
            doc["metadata"].get("annotations", {}).pop(EXPECT, None)
            base = workload_from_object(doc)
            workloads += [dataclasses.replace(base, origin=origin) for origin in ("check", "spawn", "admission")]
    return workloads


def canonical(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def same(a: Decision, b: Decision) -> bool:
    """Equal in everything OPA decided (the decision id is per answer)."""
    return dataclasses.replace(a, decision_id="") == dataclasses.replace(b, decision_id="")


async def test_batch_answers_equal_single_answers_byte_for_byte(opa_connection: OpaConnection) -> None:
    workloads = corpus()
    assert len(workloads) >= 30, "the corpus should cover every fixture"
    inputs = [encode_input(w.to_input()) for w in workloads]
    batch = await opa_connection.query_encoded(BATCH_PACKAGE, BATCH_RULE, b'{"batch":[' + b",".join(inputs) + b"]}")
    assert sorted(batch, key=int) == [str(i) for i in range(len(inputs))]
    for i, input_json in enumerate(inputs):
        single = await opa_connection.query_encoded(DECISION_PACKAGE, DECISION_RULE, input_json)
        assert canonical(batch[str(i)]) == canonical(single), f"item {i} ({workloads[i].name}, {workloads[i].origin})"


@pytest.mark.parametrize("size", [1, 7, 50])
async def test_decide_batch_equals_decide(engine: PolicyEngine, size: int) -> None:
    workloads = corpus()
    batched = await engine.decide_batch(workloads, size=size, concurrency=3)
    assert len(batched) == len(workloads)
    for workload, decision in zip(workloads, batched):
        assert same(decision, await engine.decide(workload)), workload.name
    assert any(d.allowed for d in batched) and any(not d.allowed for d in batched)


async def test_listeners_hear_every_batched_decision(opa_connection: OpaConnection) -> None:
    heard: list[Decision] = []
    engine = PolicyEngine(opa_connection, deadline=5.0, listeners=[lambda w, d, s: heard.append(d)])
    decisions = await engine.decide_batch(corpus()[:12], size=5)
    # Chunks are decided concurrently, so listeners hear them in completion order.
    assert len(heard) == len(decisions) == 12
    assert sorted(map(id, heard)) == sorted(map(id, decisions))


async def test_unreachable_opa_denies_every_item() -> None:
    async with OpaConnection(OpaEndpoint(f"http://127.0.0.1:{free_loopback_port()}"), timeout=1.0) as conn:
        decisions = await PolicyEngine(conn, deadline=1.0).decide_batch(corpus()[:9], size=4)
    assert len(decisions) == 9
    assert all(not d.allowed and d.reasons[0].rule == ENGINE_UNAVAILABLE for d in decisions)
    assert len({d.decision_id for d in decisions}) == 9


async def test_deadline_denies_the_chunk(engine: PolicyEngine) -> None:
    tight = PolicyEngine(engine.connection, deadline=1e-6)
    decisions = await tight.decide_batch(corpus()[:6], size=3)
    assert all(not d.allowed and d.reasons[0].rule == ENGINE_UNAVAILABLE for d in decisions)


async def test_policy_without_batch_entry_is_asked_one_by_one(tmp_path: Path, engine: PolicyEngine) -> None:
    older = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, older, ignore=shutil.ignore_patterns("batch"))
    workloads = corpus()[:9]
    with ManagedOpa(older) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=5.0) as conn:
            decisions = await PolicyEngine(conn, deadline=5.0).decide_batch(workloads, size=4)
    for workload, decision in zip(workloads, decisions):
        expected = await engine.decide(workload)
        assert same(dataclasses.replace(decision, policy_revision=""), dataclasses.replace(expected, policy_revision=""))
