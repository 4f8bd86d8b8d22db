"""Audited seccomp profiles and the seccomp agent.

The derivation is checked against the committed profiles; the agent against the real
kernel: a child process loads a filter whose refusals notify (libseccomp, as runc does),
hands the descriptor over in runc's message format, then makes refused calls. They must
come back EPERM and land in the audit log, attributed through the spawn registry, first
calls one by one and repeats counted.
"""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.audit.seccomp_agent import RULE, parse_handshake, refusal_event
from jovial_guard.hardening.audit_netlink import SyscallNames
from jovial_guard.hardening.learn import learned_profile_path
from jovial_guard.hardening.seccomp import (
    DENIED,
    SeccompProfileInvalid,
    localhost_profile_file,
    notebook_profile_path,
    validate_profile_dir,
)
from jovial_guard.hardening.seccomp_notify import NOTIFY, RUNC_NEEDS, audited_profile, write_audited

REPO = Path(__file__).resolve().parents[2]
NATIVE = SyscallNames().all_names()
CONTAINER = "4d1c0f3e2b1a09f8e7d6c5b4a392817161514131211100f0e0d0c0b0a0908070"


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _eperm(profile: dict[str, Any]) -> set[str]:
    """Names of the argument-free rules answering EPERM."""
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ERRNO" and r.get("errnoRet") == 1
            and not r.get("args") for n in r["names"]}


def _by_action(profile: dict[str, Any], action: str) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == action for n in r["names"]}


def test_learned_profile_refusals_all_notify() -> None:
    learned = _load(learned_profile_path())
    audited = audited_profile(learned, listener="/run/jg/agent.sock", metadata="jovial-guard/notebook-learned.json",
                              native=NATIVE)
    assert audited["listenerPath"] == "/run/jg/agent.sock"
    assert audited["listenerMetadata"] == "jovial-guard/notebook-learned.json"
    assert audited["defaultAction"] == learned["defaultAction"] == "SCMP_ACT_ERRNO"
    assert _by_action(audited, "SCMP_ACT_ALLOW") == _by_action(learned, "SCMP_ACT_ALLOW")
    notified = _by_action(audited, NOTIFY)
    named = {n for r in learned["syscalls"] for n in r["names"]}
    eperm = _eperm(learned)
    assert DENIED & named <= eperm
    assert notified == (NATIVE - named - RUNC_NEEDS) | (eperm - RUNC_NEEDS)
    assert {"memfd_create", "sched_yield", "mount", "unshare", "ptrace"} <= notified
    assert not notified & _by_action(learned, "SCMP_ACT_ALLOW")
    # Argument filters and other errnos stay as they are: clone3 must stay ENOSYS for libc.
    assert [r for r in audited["syscalls"] if r.get("args")] == [r for r in learned["syscalls"] if r.get("args")]
    assert any(r["names"] == ["clone3"] and r["errnoRet"] == errno.ENOSYS for r in audited["syscalls"])
    assert all("errnoRet" not in r for r in audited["syscalls"] if r["action"] == NOTIFY)


def test_notebook_profile_keeps_its_enosys_default() -> None:
    notebook = _load(notebook_profile_path())
    audited = audited_profile(notebook, listener="/s.sock", metadata="jovial-guard/notebook.json", native=NATIVE)
    assert DENIED & {n for r in notebook["syscalls"] for n in r["names"]} <= _eperm(notebook)
    assert _by_action(audited, NOTIFY) == _eperm(notebook) - RUNC_NEEDS
    assert audited["defaultErrnoRet"] == errno.ENOSYS
    assert _by_action(audited, "SCMP_ACT_ALLOW") == _by_action(notebook, "SCMP_ACT_ALLOW")


def test_runc_own_syscalls_never_notify_and_relative_socket_is_refused() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        {"names": ["write", "mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    audited = audited_profile(profile, listener="/s.sock", metadata="x", native={"write", "mount", "read", "getpid"})
    assert {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1} in audited["syscalls"]
    assert _by_action(audited, NOTIFY) == {"mount", "getpid"}
    with pytest.raises(SeccompProfileInvalid, match="absolute"):
        audited_profile(profile, listener="agent.sock", metadata="x", native=set())


def test_write_audited_is_content_addressed(tmp_path: Path) -> None:
    first = write_audited(learned_profile_path(), name="jovial-guard/notebook-learned.json",
                          listener=Path("/run/a.sock"), directory=tmp_path, native=NATIVE)
    again = write_audited(learned_profile_path(), name="jovial-guard/notebook-learned.json",
                          listener=Path("/run/a.sock"), directory=tmp_path, native=NATIVE)
    other = write_audited(learned_profile_path(), name="jovial-guard/notebook-learned.json",
                          listener=Path("/run/b.sock"), directory=tmp_path, native=NATIVE)
    assert first == again != other
    assert first.name.startswith("notebook-learned-") and first.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["jovial-guard/../notebook.json", "other/notebook.json", "notebook.json",
                                  "jovial-guard/sub/notebook.json", "jovial-guard/Notebook.json", None, ""])
def test_only_project_profile_names_resolve(name: str | None) -> None:
    with pytest.raises(SeccompProfileInvalid, match="not a project profile"):
        localhost_profile_file(name, notebook_profile_path().parent)


def test_project_profiles_resolve_and_match_the_policy_data(tmp_path: Path) -> None:
    directory = notebook_profile_path().parent
    assert localhost_profile_file("jovial-guard/notebook-learned.json", directory) == learned_profile_path()
    with pytest.raises(SeccompProfileInvalid, match="does not exist"):
        localhost_profile_file("jovial-guard/gone.json", directory)
    with pytest.raises(SeccompProfileInvalid, match="no seccomp profiles"):
        validate_profile_dir(tmp_path)
    # The policy may only name profiles the node agent installs and the engine can read.
    settings = json.loads((REPO / "policies" / "data.json").read_text())["settings"]
    installed = {name.removeprefix("jovial-guard/").removesuffix(".json") for name in validate_profile_dir(directory)}
    assert set(settings["seccomp"]["localhost_profiles"]) == installed
    assert settings["seccomp"]["notebook_default"] in installed
    assert all(p.get("seccomp", "notebook") in installed for p in settings["profiles"].values())


def test_handshake_parsing() -> None:
    message = json.dumps({"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 42, "metadata": "jovial-guard/x.json",
                          "state": {"id": CONTAINER, "status": "creating", "pid": 42}}).encode()
    assert parse_handshake(message).container_id == CONTAINER
    assert parse_handshake(message).profile == "jovial-guard/x.json"
    for bad in (b"[]", b'{"fds": ["seccompFd"], "state": {}}', b'{"fds": [], "state": {"id": "a"}}'):
        with pytest.raises(ValueError):
            parse_handshake(bad)


def test_refusal_event_shape() -> None:
    event = refusal_event(container_id=CONTAINER, container_name="jupyter-alice", profile="jovial-guard/x.json",
                          syscall="memfd_create", pid=7, comm="python3", count=1, first=True)
    assert event["kind"] == "seccomp" and event["rule"] == RULE and event["priority"] == "Warning"
    assert "python3 (host pid 7) called memfd_create in container jupyter-alice" in event["summary"]
    assert event["fields"]["errno"] == "EPERM"


#: A child that does what runc does for a container with a notifying profile: load the
#: filter (libseccomp), send the descriptor and its state to the agent, close its own copy,
#: then (as the container's process) make the refused calls.
CHILD = r"""
import array, ctypes, json, os, socket, sys
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # allow by default
for nr in (319, 24):  # memfd_create, sched_yield
    assert lib.seccomp_rule_add(ctx, 0x7FC00000, nr, 0) == 0  # SCMP_ACT_NOTIFY
assert lib.seccomp_load(ctx) == 0
fd = lib.seccomp_notify_fd(ctx)
state = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": os.getpid(), "metadata": "jovial-guard/test.json",
         "state": {"ociVersion": "1.0.2-dev", "id": sys.argv[2], "status": "creating", "pid": os.getpid()}}
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendmsg([json.dumps(state).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
os.close(fd)
libc = ctypes.CDLL(None, use_errno=True)
out = []
for nr in (319, 24, 24, 24):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, b"x", 0) if nr == 319 else libc.syscall(nr)
    out.append([rc, ctypes.get_errno()])
print(json.dumps(out))
"""


@pytest.fixture
async def agent_audit(tmp_path: Path) -> AsyncIterator[RunningAudit]:
    socket_path = tmp_path / "agent.sock"
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0, bulk_workers=0,
                                               seccomp_socket=socket_path)).start()
    running.registry.register(user="alice", server="", container_id=CONTAINER, container_name="jupyter-alice")
    yield running
    await running.stop()


async def test_agent_answers_eperm_and_records_attributed(agent_audit: RunningAudit, tmp_path: Path) -> None:
    agent = agent_audit.sources[-1]
    agent.repeat_interval = 0.2
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD, str(agent.socket_path), CONTAINER],
        capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == [[-1, errno.EPERM]] * 4
    directory = agent_audit.service.directory

    def refusals() -> list[dict[str, Any]]:
        return list(run_query(directory, Query(user="alice", rule=RULE)))

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(r["fields"]["count"] for r in refusals()) < 4:
        await asyncio.sleep(0.05)
    found = refusals()
    assert [(r["fields"]["syscall"], r["fields"]["count"], r["fields"]["first"]) for r in found] == [
        ("memfd_create", 1, True), ("sched_yield", 1, True), ("sched_yield", 2, False)], found
    assert {r["attribution"] for r in found} == {"registry"}
    assert found[0]["fields"]["profile"] == "jovial-guard/test.json" and found[0]["fields"]["comm"] == Path(sys.executable).name[:15]
    attached = list(run_query(directory, Query(user="alice", rule="seccomp refusals audited")))
    assert len(attached) == 1 and attached[0]["container_id"] == CONTAINER
    assert agent.refused == 4 and agent.attached == 1


async def test_agent_refuses_a_second_agent_on_its_socket(agent_audit: RunningAudit) -> None:
    from jovial_guard.audit.seccomp_agent import SeccompAgent, SeccompAgentUnavailable

    with pytest.raises(SeccompAgentUnavailable, match="another seccomp agent"):
        SeccompAgent(agent_audit.service, agent_audit.sources[-1].socket_path).start()


def test_serve_refuses_a_taken_agent_socket_without_a_traceback(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from jovial_guard.cli import main as cli

    taken = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(taken))
        other.listen(1)
        result = CliRunner().invoke(cli, ["audit", "serve", "--dir", str(tmp_path / "audit"), "--listen",
                                          "127.0.0.1:0", "--seccomp-socket", str(taken)])
    assert result.exit_code != 0, result.output
    assert f"seccomp agent: another seccomp agent answers on {taken}" in result.output
    assert "Traceback" not in result.output
