"""The webhook's pure helpers: UPDATE classification, rendered labels, and the decision's
scope/exemptions as they travel to the audit annotations and the decision log."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.admission.handler import decision_audit
from jovial_guard.admission.labels import label_ops
from jovial_guard.admission.update import classify, with_stored_object
from jovial_guard.decision import Decision, SecuritySpec
from jovial_guard.errors import MalformedDecision
from jovial_guard.normalize import workload_from_admission_review
from jovial_guard.policy.decision_log import DecisionLog, DecisionRecord

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SPEC = json.loads((VECTORS / "render_pod" / "bare_notebook.json").read_text())["spec"]
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "jupyter-ann", "labels": {"component": "singleuser-server"}, "annotations": {"a": "1"}},
       "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}


def request(new: dict[str, Any], old: dict[str, Any] | None, *, subresource: str | None = None, kind: str = "Pod") -> dict[str, Any]:
    req: dict[str, Any] = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": kind}, "namespace": "jhub",
                           "operation": "UPDATE" if old is not None else "CREATE", "userInfo": {"username": "ops"},
                           "object": new, "oldObject": old}
    if subresource:
        req["subResource"] = subresource
    return req


def decide_kind(new: dict[str, Any], old: dict[str, Any] | None, **kwargs: Any) -> str:
    req = request(new, old, **kwargs)
    workload = workload_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
    return classify(req, workload)


def changed(**edits: Any) -> dict[str, Any]:
    pod = copy.deepcopy(POD)
    for path, value in edits.items():
        section, key = path.split("__")
        pod[section][key] = value
    return pod


def test_update_classes() -> None:
    assert decide_kind(POD, None) == "create"
    assert decide_kind(changed(metadata__finalizers=["x"]), POD) == "unchanged-metadata"
    assert decide_kind(changed(metadata__labels={"component": "singleuser-server", "team": "ops"}), POD) == "metadata-only"
    assert decide_kind(changed(metadata__annotations={"a": "2"}), POD) == "metadata-only"
    assert decide_kind(changed(spec__ephemeralContainers=[{"name": "d", "image": "x:1"}]), POD) == "full"
    assert decide_kind(changed(metadata__finalizers=["x"]), POD, subresource="resize") == "full"
    apparmor = {"a": "1", "container.apparmor.security.beta.kubernetes.io/notebook": "unconfined"}
    assert decide_kind(changed(metadata__annotations=apparmor), POD) == "full"


def test_stored_object_travels_to_the_policy() -> None:
    new = changed(metadata__labels={"component": "hub"})
    req = request(new, POD, subresource="ephemeralcontainers")
    workload = workload_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
    extra = with_stored_object(req, workload, "full").extra
    assert extra["old_metadata"]["labels"] == {"component": "singleuser-server"}
    assert extra["old_spec"] == POD["spec"] and extra["subresource"] == "ephemeralcontainers"
    assert extra["metadata_only"] is False
    assert with_stored_object(req, workload, "create") is workload


def spec_with(labels: dict[str, str]) -> SecuritySpec:
    return SecuritySpec.from_json({**SPEC, "labels": {"managed_prefix": "egress.jovial-guard.io/", "set": labels}})


@pytest.mark.parametrize("metadata, wanted, ops", [
    ({}, {}, []),
    ({"name": "p"}, {"egress.jovial-guard.io/astro": "allow"},
     [{"op": "add", "path": "/metadata/labels", "value": {"egress.jovial-guard.io/astro": "allow"}}]),
    ({"labels": {"egress.jovial-guard.io/staff": "allow", "app": "x"}}, {"egress.jovial-guard.io/astro": "allow"},
     [{"op": "remove", "path": "/metadata/labels/egress.jovial-guard.io~1staff"},
      {"op": "add", "path": "/metadata/labels/egress.jovial-guard.io~1astro", "value": "allow"}]),
    ({"labels": {"egress.jovial-guard.io/astro": "allow"}}, {"egress.jovial-guard.io/astro": "allow"}, []),
    ({"labels": {"egress.jovial-guard.io/astro": "yes"}}, {"egress.jovial-guard.io/astro": "allow"},
     [{"op": "add", "path": "/metadata/labels/egress.jovial-guard.io~1astro", "value": "allow"}]),
])
def test_label_ops(metadata: dict[str, Any], wanted: dict[str, str], ops: list[dict[str, Any]]) -> None:
    assert label_ops({"metadata": metadata, "spec": {}}, spec_with(wanted)) == ops


def test_scope_and_exemptions_reach_audit_and_log(tmp_path: Path) -> None:
    doc = {"allowed": True, "reasons": [], "spec": SPEC, "revision": "sha256:1", "scope": "platform",
           "exemptions": [{"id": "e1", "rule": "pod-security/privileged", "reason": "why", "expires": None}]}
    decision = Decision.from_opa(doc)
    assert decision_audit(decision) == {"mode": "none", "scope": "platform", "exemptions": "e1 (pod-security/privileged): why"}
    req = request(POD, None)
    workload = workload_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
    log = DecisionLog(tmp_path / "d.jsonl")
    log.record(workload, decision, 0.001)
    (record,) = log.records()
    assert record.scope == "platform" and record.exemptions[0]["id"] == "e1"
    # Records written before these fields existed still load.
    old = json.loads((tmp_path / "d.jsonl").read_text())
    del old["scope"], old["exemptions"]
    assert DecisionRecord.from_json(old).exemptions == []
    with pytest.raises(MalformedDecision):
        Decision.from_opa({**doc, "exemptions": [{"id": "e1"}]})


def test_malformed_stored_metadata_counts_as_none() -> None:
    old = changed(metadata__annotations=["not", "a", "map"])
    assert decide_kind(POD, old) == "metadata-only"


def test_the_stored_object_is_masked_in_the_decision_log(tmp_path: Path) -> None:
    secret_pod = copy.deepcopy(POD)
    secret_pod["spec"]["containers"][0]["env"] = [{"name": "API_TOKEN", "value": "s3cret"}]
    secret_pod["metadata"]["annotations"] = {"example.com/api-token": "s3cret"}
    new = copy.deepcopy(secret_pod)
    new["spec"]["ephemeralContainers"] = [{"name": "d", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]
    req = request(new, secret_pod, subresource="ephemeralcontainers")
    workload = workload_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
    workload = with_stored_object(req, workload, classify(req, workload))
    log = DecisionLog(tmp_path / "d.jsonl")
    log.record(workload, Decision.deny("x", "y"), 0.001)
    assert "s3cret" not in (tmp_path / "d.jsonl").read_text()
