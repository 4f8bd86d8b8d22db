"""Decision log: bounded, masked, queryable by user; a torn line never breaks a query."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jovial_guard.decision import Decision, Reason
from jovial_guard.policy.decision_log import MASK, DecisionLog, mask_input
from jovial_guard.workload import HubUser, Workload


def workload(user: str) -> Workload:
    return Workload(
        origin="spawn", kind="Pod", name=f"jupyter-{user}", namespace="hub", user=HubUser(user, ("astro",)),
        pod={"metadata": {"annotations": {"hub.jupyter.org/api-token": "tok", "note": "keep"}},
             "spec": {"containers": [{"name": "nb", "image": "x:1", "env": [{"name": "JUPYTERHUB_API_TOKEN", "value": "abc123"}],
                                      "args": ["--password=hunter2", "--port=8888"]}]}},
    )


def deny() -> Decision:
    return Decision(allowed=False, reasons=(Reason("profiles/not-allowed", "no"),), spec=None, policy_revision="sha256:1")


def test_masking_keeps_what_policy_reads() -> None:
    masked = mask_input(workload("ann").to_input())
    container = masked["workload"]["pod"]["spec"]["containers"][0]
    assert container["env"][0] == {"name": "JUPYTERHUB_API_TOKEN", "value": MASK}
    assert container["args"] == ["--password=" + MASK, "--port=8888"]
    annotations = masked["workload"]["pod"]["metadata"]["annotations"]
    assert annotations == {"hub.jupyter.org/api-token": MASK, "note": "keep"}
    assert container["image"] == "x:1"


def test_record_and_query_by_user(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    for user in ("ann", "ben", "ann"):
        log(workload(user), deny(), 0.002)
    records = list(log.records(user="ann"))
    assert len(records) == 2 and all(r.user == "ann" and not r.allowed for r in records)
    assert records[0].reasons == [{"rule": "profiles/not-allowed", "message": "no"}]
    assert records[0].latency_ms == 2.0
    assert "abc123" not in (tmp_path / "d.jsonl").read_text()


def test_rotation_bounds_size(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl", max_bytes=4000, keep_files=3)
    for i in range(100):
        log(workload(f"u{i}"), deny(), 0.001)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3
    assert all(f.stat().st_size <= 4000 for f in files)
    users = [r.user for r in log.records()]
    assert users == sorted(users, key=lambda u: int(u[1:]))  # oldest first, newest kept
    assert users[-1] == "u99" and "u0" not in users


def test_retention_drops_old_records(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl", retention_days=1)
    log.record(workload("old"), deny(), 0.001, now=time.time() - 2 * 86400)
    log.record(workload("new"), deny(), 0.001)
    assert [r.user for r in log.records()] == ["new"]
    assert [r.user for r in log.records(since=0)] == ["new"]


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log(workload("ann"), deny(), 0.001)
    with open(tmp_path / "d.jsonl", "a") as fh:
        fh.write('{"not": "a record"}\n{"time": 1, "trunc')
    assert [r.user for r in log.records()] == ["ann"]


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DecisionLog(tmp_path / "d.jsonl", max_bytes=0)


def test_append_after_torn_line_is_not_swallowed(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log(workload("ann"), deny(), 0.001)
    with open(tmp_path / "d.jsonl", "a") as fh:
        fh.write('{"time": 1, "trunc')
    log(workload("ben"), deny(), 0.001)
    assert [r.user for r in log.records()] == ["ann", "ben"]
