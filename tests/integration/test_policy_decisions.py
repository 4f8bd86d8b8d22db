"""The policy set, decided by a real OPA, against Pod Security Standards fixtures."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.hardening.render_pod import render_pod_patch, reroot_patch
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.engine import PolicyEngine

from tests.conftest import FIXTURES, load_documents

EXPECT = "test.jovial-guard.io/expect"


def _fixture_cases() -> list[Any]:
    cases = []
    for path in sorted((FIXTURES / "pss").glob("*.yaml")):
        for doc in load_documents(path):
            expect = doc["metadata"]["annotations"][EXPECT]
            cases.append(pytest.param(doc, expect, id=f"{path.stem}:{doc['metadata']['name']}"))
    return cases


def _strip_expectation(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["annotations"].pop(EXPECT)
    return doc


@pytest.mark.parametrize(("doc", "expect"), _fixture_cases())
async def test_fixture_is_decided_as_documented(engine: PolicyEngine, doc: dict[str, Any], expect: str) -> None:
    doc = _strip_expectation(doc)
    workload = workload_from_object(doc)
    decision = await engine.decide(workload)
    if expect != "allowed":
        assert not decision.allowed
        assert expect in {r.rule for r in decision.reasons}, decision.reasons
        assert decision.spec is None
        return
    assert decision.allowed, decision.reasons
    assert decision.spec is not None
    # The patched object satisfies "restricted": the policy finds nothing left to fix
    # (no omission warnings) and the renderer has nothing left to add.
    patch = reroot_patch(render_pod_patch(workload.pod, decision.spec), workload.pod_path)
    patched = jsonpatch.apply_patch(doc, patch)
    again = await engine.decide(workload_from_object(patched))
    assert again.allowed, again.reasons
    assert again.warnings == (), again.warnings
    assert render_pod_patch(workload_from_object(patched).pod, again.spec) == []


async def test_patched_pod_meets_restricted_field_by_field(engine: PolicyEngine) -> None:
    """Spelled out for the bare pod: each restricted control is present after the patch."""
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "labels": {"component": "singleuser-server"}},
           "spec": {"containers": [{"name": "nb", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}
    workload = workload_from_object(doc)
    decision = await engine.decide(workload)
    assert decision.spec is not None
    pod = jsonpatch.apply_patch(doc, render_pod_patch(workload.pod, decision.spec))
    pod_sc = pod["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"}
    assert pod["spec"]["nodeSelector"] == {"jovial-guard.io/profiles-ready": "true"}
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts == {"/tmp", "/home/jovyan"}
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}


async def test_profile_gated_by_group(engine: PolicyEngine) -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"jovial-guard.io/profile": "large-memory"}},
           "spec": {"containers": [{"name": "nb", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}
    decision = await engine.decide(workload_from_object(doc))
    assert not decision.allowed
    [reason] = decision.reasons
    assert reason.rule == "profiles/not-allowed"
    assert "large-memory" in reason.message and "staff" in reason.message


async def test_decision_reports_the_loaded_revision(engine: PolicyEngine, opa: Any) -> None:
    doc = load_documents(FIXTURES / "pss" / "allowed.yaml")[0]
    decision = await engine.decide(workload_from_object(_strip_expectation(doc)))
    assert decision.policy_revision == opa.revision
    assert await engine.revision() == opa.revision
    assert opa.revision.startswith("sha256:")


async def test_denial_reasons_name_container_and_fix(engine: PolicyEngine) -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "worker", "image": "quay.io/jupyter/x:1", "securityContext": {"privileged": True}}]}}
    decision = await engine.decide(workload_from_object(doc))
    assert not decision.allowed
    assert "worker" in decision.message() and "Remove securityContext.privileged" in decision.message()
    assert ENGINE_UNAVAILABLE not in decision.message()

