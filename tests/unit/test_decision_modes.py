"""Decision.from_opa reads the enforcement mode and the warned/audited violations."""

from __future__ import annotations

from pathlib import Path

import pytest

from jovial_guard.decision import Decision, Reason
from jovial_guard.errors import MalformedDecision

DENY = {"allowed": False, "reasons": [{"rule": "images/latest", "message": "no"}], "spec": None, "revision": "r"}


def test_mode_and_lists_are_parsed() -> None:
    doc = {**DENY, "mode": "enforce", "warned": [{"rule": "b/x", "message": "w"}], "audited": [{"rule": "a/y", "message": "a"}]}
    d = Decision.from_opa(doc)
    assert d.mode == "enforce"
    assert d.violations() == (("enforce", Reason("images/latest", "no")), ("warn", Reason("b/x", "w")), ("audit", Reason("a/y", "a")))


def test_older_policies_without_mode_default_sensibly() -> None:
    assert Decision.from_opa(DENY).mode == "enforce"


@pytest.mark.parametrize("doc", [
    {**DENY, "mode": "warn"},  # a denial never acts in a softer mode
    {**DENY, "mode": "lenient"},
    {**DENY, "warned": "images/latest"},
    {**DENY, "audited": [{"rule": "x"}]},
])
def test_odd_modes_are_malformed(doc: dict[str, object]) -> None:
    with pytest.raises(MalformedDecision):
        Decision.from_opa(doc)


def test_fail_closed_denials_are_enforce() -> None:
    assert Decision.deny("policy-engine-unavailable", "down").mode == "enforce"


def test_decision_log_records_the_mode(tmp_path: Path) -> None:
    from jovial_guard.policy.decision_log import DecisionLog
    from jovial_guard.workload import Workload

    doc = {**DENY, "mode": "enforce", "warned": [{"rule": "b/x", "message": "w"}], "audited": [{"rule": "a/y", "message": "a"}]}
    workload = Workload(origin="admission", kind="Pod", name="p", namespace="ns", pod={"metadata": {}, "spec": {}},
                        namespace_labels={"jovial-guard.io/mode": "warn"})
    log = DecisionLog(tmp_path / "d.jsonl")
    log.record(workload, Decision.from_opa(doc), 0.001)
    (record,) = list(log.records())
    assert record.mode == "enforce"
    assert record.warned == [{"rule": "b/x", "message": "w"}] and record.audited == [{"rule": "a/y", "message": "a"}]
    assert record.input["workload"]["namespace_labels"] == {"jovial-guard.io/mode": "warn"}
