"""The node agent's readiness: the status a good pass leaves, and ``jovial-guard node-ready``.

Ready needs a fresh status, the installed profiles unchanged and, when the agent serves the
CNI hand-off, its socket answering (a real EgressServer here); each failure is one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.node import readiness
from jovial_guard.node.egress import EgressServer

PROFILES = {"notebook.json": b'{"defaultAction": "SCMP_ACT_ERRNO"}'}


def installed(tmp_path: Path) -> Path:
    directory = tmp_path / "seccomp" / "jovial-guard"
    directory.mkdir(parents=True)
    for name, data in PROFILES.items():
        (directory / name).write_bytes(data)
    return directory


def write(tmp_path: Path, *, socket_path: Path | None = None, now: float | None = None) -> Path:
    status = tmp_path / "status" / "ready.json"
    readiness.record(status, node="n1", interval=30, profile_dir=installed(tmp_path), profiles=PROFILES,
                     socket_path=socket_path, now=now)
    return status


def node_ready(status: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jovial_guard", "node-ready", "--status-file", str(status)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_fresh_status_with_the_profiles_in_place_is_ready(tmp_path: Path) -> None:
    status = write(tmp_path)
    assert readiness.problems(status) == []
    result = node_ready(status)
    assert (result.returncode, result.stdout.strip()) == (0, "node agent ready"), result.stderr


def test_before_the_first_good_pass_it_is_not_ready_and_says_so(tmp_path: Path) -> None:
    result = node_ready(tmp_path / "ready.json")
    assert result.returncode == 1
    assert result.stderr.startswith("node agent not ready: no successful pass yet"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_stale_status_is_not_ready(tmp_path: Path) -> None:
    status = write(tmp_path, now=time.time() - 2 * 30 - readiness.GRACE - 5)
    (problem,) = readiness.problems(status)
    assert "the last successful pass was 95 s ago (passes every 30 s)" in problem


def test_a_profile_changed_or_removed_since_the_pass_is_not_ready(tmp_path: Path) -> None:
    status = write(tmp_path)
    profile = tmp_path / "seccomp" / "jovial-guard" / "notebook.json"
    profile.write_bytes(b"{}")
    assert readiness.problems(status) == [f"profile {profile} changed since the last pass"]
    profile.unlink()
    (problem,) = readiness.problems(status)
    assert problem.startswith(f"profile {profile} is unreadable (No such file or directory")


@pytest.mark.parametrize("content", [b"", b"[]", b'{"node": "n1"}'])
def test_a_file_that_is_not_a_status_is_not_ready(tmp_path: Path, content: bytes) -> None:
    status = tmp_path / "ready.json"
    status.write_bytes(content)
    (problem,) = readiness.problems(status)
    assert problem.startswith(f"{status} is not a readable status file")


def test_clear_makes_it_not_ready(tmp_path: Path) -> None:
    status = write(tmp_path)
    readiness.clear(status)
    readiness.clear(status)
    assert readiness.problems(status)[0].startswith("no successful pass yet")


def test_the_cni_socket_must_answer(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "egress.sock"
    agent: Any = None  # the ping never reaches the agent
    server = EgressServer(sock, agent)
    server.serve_in_thread()
    status = write(tmp_path, socket_path=sock)
    try:
        assert readiness.problems(status) == []
    finally:
        server.close()
    (problem,) = readiness.problems(status)
    assert problem.startswith(f"the CNI hand-off socket {sock} does not answer ([Errno 2]"), problem
    # A socket nobody serves: connection refused, also one line.
    import socket

    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))
        (problem,) = readiness.problems(status)
        assert "does not answer ([Errno 111] Connection refused)" in problem
    result = node_ready(status)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr


def test_the_status_file_is_replaced_atomically_and_readable_by_the_probe(tmp_path: Path) -> None:
    status = write(tmp_path)
    assert oct(os.stat(status).st_mode & 0o777) == "0o644"
    assert [p.name for p in status.parent.iterdir()] == ["ready.json"]
