"""Live attestation on the embedded hub: real servers, real drift caused from the host.

The hub's audit service attests every running server every ``INTERVAL`` seconds (and at each
start) against the hardening record its spawn registered. A clean server attests ok; then,
on separate servers, the test flushes the user's namespace ruleset, starts a process in the
container's namespaces without the seccomp filter (``nsenter``) and remounts the container's
root read-write. Each must raise ``attestation drift`` attributed to the user within the
loop period, and the configured response (``config/audit-responses.yaml``: cut the network,
stop the server) must follow. The measured drift-to-alert latency and the loop's CPU cost
per server are printed (``-s``) and stated in the README.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.attest.status import read_status
from jovial_guard.audit.attest_loop import AttestationLoop, docker_locator
from jovial_guard.audit.checkpoint import load_or_create_key
from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.registry import SpawnRegistry
from jovial_guard.audit.service import AuditService

pytestmark = pytest.mark.integration

#: The hub's attestation period (jupyterhub_config.py default, JOVIAL_GUARD_ATTEST_INTERVAL).
INTERVAL = 5.0
#: One pass plus committing its events, on this loaded 2-core machine.
PASS_SLACK = 3.0


def audit_dir(hub: Any) -> Path:
    return Path(hub.state_dir) / "audit"


def records(hub: Any, user: str, **query: Any) -> list[dict[str, Any]]:
    return list(run_query(audit_dir(hub), Query(user=user, **query)))


def ts(record: dict[str, Any]) -> float:
    return _dt.datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def wait_for(check: Callable[[], list[dict[str, Any]]], timeout: float, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def attested_ok(hub: Any, user: str) -> dict[str, Any]:
    found = wait_for(lambda: [r for r in records(hub, user, kind="attestation") if r["rule"] == "attestation ok"],
                     INTERVAL * 3 + PASS_SLACK, f"{user}'s server to attest ok")
    return found[-1]


def drift_after(hub: Any, user: str, since: float, kind: str) -> dict[str, Any]:
    def new_drifts() -> list[dict[str, Any]]:
        return [r for r in records(hub, user, kind="attestation", rule="attestation drift")
                if ts(r) >= since - 0.5 and kind in {d["kind"] for d in r["fields"]["drifts"]}]

    return wait_for(new_drifts, INTERVAL * 3 + PASS_SLACK, f"an attestation drift of kind {kind} for {user}")[0]


def responses_after(hub: Any, user: str, seq: int) -> dict[str, dict[str, Any]]:
    def done() -> list[dict[str, Any]]:
        found = [r for r in records(hub, user, kind="response") if r["fields"]["trigger_record"] == seq]
        return found if {"cut_network", "stop_server"} <= {r["fields"]["action"] for r in found} else []

    return {r["fields"]["action"]: r for r in wait_for(done, 60, f"the responses to record {seq}")}


def container_pid(hub: Any, user: str) -> int:
    container = hub.container(user)
    container.reload()
    return int(container.attrs["State"]["Pid"])


def check_response(hub: Any, user: str, alert: dict[str, Any], caused: float, what: str) -> None:
    latency = ts(alert) - caused
    print(f"\nattestation: {what} -> alert in {latency:.2f} s (loop period {INTERVAL:g} s)")
    assert alert["attribution"] == "registry" and alert["user"] == user and alert["priority"] == "Critical"
    assert latency <= INTERVAL + PASS_SLACK, f"alert {latency:.1f}s after the drift"
    acted = responses_after(hub, user, int(alert["seq"]))
    assert acted["cut_network"]["fields"]["outcome"] == "done", acted["cut_network"]["summary"]
    assert acted["stop_server"]["fields"]["outcome"] == "done", acted["stop_server"]["summary"]
    assert ts(acted["cut_network"]) - caused <= INTERVAL + PASS_SLACK + 5
    wait_for(lambda: [] if hub._server(user) else [{"stopped": True}], 60, f"{user}'s server to stop")
    hub._profiles.pop(user, None)


def test_clean_server_attests_ok_from_its_start(embedded_hub: Any) -> None:
    user = "attestok"
    embedded_hub.spawn(user)
    ok = attested_ok(embedded_hub, user)
    assert ok["attribution"] == "registry" and ok["fields"]["drifts"] == []
    assert ok["fields"]["processes"] >= 1 and ok["fields"]["ruleset_digest"].startswith("v1:sha256:")
    start = [r for r in records(embedded_hub, user, kind="engine") if r["rule"] == "container start"][-1]
    first = records(embedded_hub, user, kind="attestation")[0]
    assert ts(first) - ts(start) <= INTERVAL + PASS_SLACK, "no attestation right after the start"
    status = read_status(audit_dir(embedded_hub))[(user, "")]
    assert status.status == "ok" and time.time() - status.time <= INTERVAL + PASS_SLACK


def test_flushed_namespace_ruleset_is_drift_and_the_network_is_cut(embedded_hub: Any) -> None:
    user = "attestnet"
    embedded_hub.spawn(user)
    attested_ok(embedded_hub, user)
    namespace = embedded_hub.egress.namespace_of(user)
    caused = time.time()
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "flush", "ruleset"], check=True, timeout=30)
    alert = drift_after(embedded_hub, user, caused, "ruleset")
    check_response(embedded_hub, user, alert, caused, "flushed ruleset")


def test_process_without_the_filter_is_drift(embedded_hub: Any) -> None:
    user = "attestproc"
    embedded_hub.spawn(user)
    attested_ok(embedded_hub, user)
    pid = container_pid(embedded_hub, user)
    caused = time.time()
    intruder = subprocess.Popen(["nsenter", "-t", str(pid), "-m", "-p", "-n", "--", "sleep", "300"],
                                start_new_session=True)
    try:
        alert = drift_after(embedded_hub, user, caused, "seccomp")
        kinds = {d["kind"] for d in alert["fields"]["drifts"]}
        assert {"seccomp", "no_new_privs", "capabilities", "limits"} <= kinds, kinds
        check_response(embedded_hub, user, alert, caused, "process without the filter (nsenter)")
    finally:
        os.killpg(intruder.pid, signal.SIGKILL)
        intruder.wait(timeout=30)


def test_root_remounted_read_write_is_drift(embedded_hub: Any) -> None:
    user = "attestmount"
    embedded_hub.spawn(user)
    attested_ok(embedded_hub, user)
    pid = container_pid(embedded_hub, user)
    caused = time.time()
    remount = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "mount", "-o", "remount,bind,rw", "/"],
                             capture_output=True, text=True, timeout=30)
    assert remount.returncode == 0, remount.stderr
    alert = drift_after(embedded_hub, user, caused, "mount")
    check_response(embedded_hub, user, alert, caused, "root remounted read-write")


def test_cost_of_a_pass_per_server(embedded_hub: Any, tmp_path: Path) -> None:
    """CPU of the loop (this process and its nft children) per server per minute, measured on
    real running servers through the hub's own registry and engine."""
    users = ["attestcost1", "attestcost2"]
    for user in users:
        embedded_hub.spawn(user)
    registry = SpawnRegistry(audit_dir(embedded_hub) / "spawns.sqlite")

    async def measure() -> tuple[float, int]:
        service = AuditService(tmp_path / "audit", key=load_or_create_key(tmp_path / "k"))
        await service.start()
        loop = AttestationLoop(service, registry, locate=docker_locator(embedded_hub.docker), interval=INTERVAL)
        await loop.attest_all()  # warm
        passes, servers = 10, 0
        before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(passes):
            servers = len(await loop.attest_all())
        after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        await service.close()
        cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
        return cpu / passes, servers

    try:
        per_pass, servers = asyncio.run(measure())
    finally:
        registry.close()
    assert servers >= len(users)
    per_server_minute = per_pass / servers * 60 / INTERVAL
    print(f"\nattestation: {per_pass * 1000:.1f} ms CPU per pass over {servers} servers; "
          f"{per_server_minute * 1000:.0f} ms CPU per server per minute at a {INTERVAL:g} s period "
          f"({per_server_minute / 60 * 100:.2f}% of one core per server)")
    assert per_server_minute < 6.0, "attestation would cost a tenth of a core per server"


def test_processes_the_runtime_execs_into_a_server_are_not_drift(embedded_hub: Any, tmp_path: Path) -> None:
    """``exec`` into a server starts a runtime init process that joins the container's
    namespaces before its seccomp filter and NoNewPrivs are in place; a pass that catches it
    in that window must not call the server drifted (the response would stop it). Passes run
    back to back while execs come and go; none may report drift, and an intruder that stays
    is still reported."""
    user = "attestexec"
    embedded_hub.spawn(user)
    attested_ok(embedded_hub, user)
    registry = SpawnRegistry(audit_dir(embedded_hub) / "spawns.sqlite")
    container = embedded_hub.container(user)

    async def passes_during_execs() -> tuple[list[dict[str, Any]], int]:
        service = AuditService(tmp_path / "audit", key=load_or_create_key(tmp_path / "k"))
        await service.start()
        loop = AttestationLoop(service, registry, locate=docker_locator(embedded_hub.docker), interval=INTERVAL)
        execs = asyncio.get_running_loop().run_in_executor(
            None, lambda: [container.exec_run(["python3", "-c", "pass"]) for _ in range(40)])
        seen: list[dict[str, Any]] = []
        count = 0
        while not execs.done():
            events = [e for e in await loop.attest_all() if e.get("user") == user]
            seen.extend(e for e in events if e["rule"] != "attestation ok")
            count += len(events)
        results = await execs
        await service.close()
        assert all(r.exit_code == 0 for r in results), [r.output for r in results if r.exit_code]
        return seen, count

    try:
        drifted, passes = asyncio.run(passes_during_execs())
    finally:
        registry.close()
    print(f"\nattestation: {passes} passes during 40 execs, {len(drifted)} not ok")
    assert passes >= 10, "too few passes overlapped the execs to mean anything"
    assert drifted == [], [d["fields"]["drifts"] for d in drifted]
