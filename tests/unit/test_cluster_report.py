"""PolicyReport building and the cluster-audit gauges, against literal decisions."""

from __future__ import annotations

from jovial_guard.clusteraudit.metrics import ClusterAuditMetrics
from jovial_guard.clusteraudit.report import PodVerdict, build_reports, findings
from jovial_guard.decision import ENGINE_UNAVAILABLE, Decision, Reason

SPEC_LESS_ALLOW = Decision(True, (), None, "sha256:1")


def verdict(ns: str, name: str, decision: Decision, user: str = "ann") -> PodVerdict:
    return PodVerdict(ns, name, f"uid-{name}", user, decision)


def test_results_by_mode_and_summary() -> None:
    denied = Decision(False, (Reason("pod-security/privileged", "privileged"),), None, "sha256:1", mode="enforce",
                      audited=(Reason("images/latest", "latest tag"),))
    warned = Decision(True, (), None, "sha256:1", mode="warn", warned=(Reason("resources/cpu", "too much cpu"),))
    reports = build_reports([verdict("a", "p1", denied), verdict("a", "p2", warned), verdict("b", "p3", SPEC_LESS_ALLOW)],
                            revision="sha256:1", timestamp=100)
    a = reports["a"]
    assert a["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and a["kind"] == "PolicyReport"
    assert a["metadata"]["name"] == "jovial-guard" and a["metadata"]["namespace"] == "a"
    assert a["summary"] == {"pass": 0, "fail": 2, "warn": 1, "error": 0, "skip": 0}
    by_rule = {r["rule"]: r for r in a["results"]}
    assert by_rule["pod-security/privileged"]["severity"] == "high"
    assert by_rule["images/latest"]["result"] == "fail" and by_rule["images/latest"]["properties"]["mode"] == "audit"
    assert by_rule["resources/cpu"]["result"] == "warn"
    assert by_rule["resources/cpu"]["resources"] == [{"apiVersion": "v1", "kind": "Pod", "name": "p2", "namespace": "a", "uid": "uid-p2"}]
    assert reports["b"]["summary"]["pass"] == 1 and reports["b"]["results"][0]["result"] == "pass"


def test_engine_failure_is_an_error_result_never_a_pass() -> None:
    failed = Decision.deny(ENGINE_UNAVAILABLE, "OPA down")
    report = build_reports([verdict("a", "p", failed)], revision="r", timestamp=1)["a"]
    assert report["summary"]["error"] == 1 and report["summary"]["pass"] == 0
    assert [f.mode for f in findings([verdict("a", "p", failed)])] == ["error"]


def test_gauges_carry_no_user_and_forget_fixed_violations() -> None:
    metrics = ClusterAuditMetrics()
    bad = Decision(False, (Reason("images/not-allowed", "no"),), None, "r1", mode="enforce")
    metrics.update(findings([verdict("a", "p", bad, user="zed")]), {"a": 1}, revision="r1", finished=5.0)
    text = metrics.render().decode()
    assert 'jovial_guard_cluster_audit_violations{mode="enforce",namespace="a",rule="images/not-allowed"} 1.0' in text
    assert "zed" not in text and 'jovial_guard_policy_revision_info{revision="r1"} 1.0' in text
    metrics.update([], {"a": 1}, revision="r2", finished=6.0)
    text = metrics.render().decode()
    assert "images/not-allowed" not in text and 'revision="r1"' not in text
