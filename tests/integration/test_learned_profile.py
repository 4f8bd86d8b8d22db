"""The learned seccomp profile, enforced by the kernel in real notebook containers.

Real podman (the project's service and storage), the real notebook image, the spawn's
hardening (``recorder.container_kwargs``), and the committed
``profiles/seccomp/notebook-learned.json``: every recorded workload must still pass under
it, and a syscall the notebook profile allows but no workload made must fail with EPERM
(and must not under the notebook profile, so the refusal is the learned profile's doing).
The recorder itself runs once on one short workload, as the command line runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jovial_guard.hardening.audit_netlink import SyscallNames
from jovial_guard.hardening.learn import allowed_names, learned_profile_path, load_json
from jovial_guard.hardening.recorder import (
    LABEL,
    WORKLOADS,
    build_probe_wheel,
    container_kwargs,
    run_in_notebook,
    run_workload,
)
from jovial_guard.hardening.seccomp import notebook_profile_path, validate_profile_file
from jovial_guard.runtime.podman import PodmanService

pytestmark = pytest.mark.integration

X86_64 = 0xC000003E
#: Syscalls that are harmless with all-zero arguments; the test uses those the notebook
#: profile allows and the learned one does not.
ZERO_ARG_CANDIDATES = ("getcpu", "getpgrp", "getsid", "sched_yield", "alarm", "times",
                       "inotify_init1", "eventfd2", "timerfd_create", "epoll_create1",
                       "getitimer", "sync", "syncfs", "setsid", "getpgid", "membarrier")
PROBE = (
    "import ctypes,json,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "out={}\n"
    "for name,nr in json.loads(sys.argv[1]).items():\n"
    "    ctypes.set_errno(0)\n"
    "    rc=libc.syscall(nr,0,0,0,0,0,0)\n"
    "    out[name]=[rc,ctypes.get_errno() if rc==-1 else 0]\n"
    "print(json.dumps(out))\n"
)

#: A 64-bit process makes the i386 getpid through ``int 0x80`` (the 32-bit ABI); the
#: parent reports how the child ended.
I386_PROBE = (
    "import ctypes,json,mmap,os,subprocess,sys\n"
    "if sys.argv[1:]==['child']:\n"
    "    page=mmap.mmap(-1,4096,prot=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC)\n"
    "    page.write(bytes([0xb8,0x14,0,0,0,0xcd,0x80,0xc3]))\n"
    "    call=ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))\n"
    "    print(call(),os.getpid(),flush=True)\n"
    "    raise SystemExit(0)\n"
    "child=subprocess.run([sys.executable,'-c',sys.argv[1],'child'],capture_output=True,text=True)\n"
    "print(json.dumps({'rc':child.returncode,'out':child.stdout.split()}))\n"
)


@pytest.fixture(scope="module")
def engine(notebook_engine: PodmanService) -> PodmanService:
    return notebook_engine


@pytest.fixture(scope="module")
def client(engine: PodmanService) -> Iterator[docker.DockerClient]:
    cli = engine.docker_client(timeout=900)
    try:
        yield cli
    finally:
        for container in cli.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
        cli.close()


@pytest.fixture(scope="module")
def home(client: docker.DockerClient) -> Iterator[str]:
    """One home volume for all workloads, as one user's server keeps its home."""
    name = f"jovial-guard-learn-test-{secrets.token_hex(4)}"
    client.volumes.create(name=name, labels={LABEL: "test-home"})
    try:
        yield name
    finally:
        client.volumes.get(name).remove(force=True)


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    build_probe_wheel(directory)
    return directory


@pytest.fixture(scope="module")
def settings(home: str, wheel_dir: Path) -> Any:
    """Container settings of the spawn for a given seccomp profile file."""
    def make(profile: Path) -> dict[str, Any]:
        return container_kwargs(seccomp_path=validate_profile_file(profile),
                                home_volume=home, wheel_dir=wheel_dir)
    return make


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_passes_under_the_learned_profile(client: docker.DockerClient, settings: Any,
                                                   workload: str) -> None:
    run = run_workload(client, workload, settings(learned_profile_path()))
    assert run["ok"], f"{workload} failed under the learned profile:\n{run['log_tail']}"


def test_unrecorded_syscall_fails_with_eperm(client: docker.DockerClient, settings: Any) -> None:
    notebook = allowed_names(load_json(notebook_profile_path(), what="notebook"))
    learned = allowed_names(load_json(learned_profile_path(), what="learned"))
    chosen = [n for n in ZERO_ARG_CANDIDATES if n in notebook and n not in learned]
    assert chosen, "no harmless syscall left that the learned profile refuses"
    names = SyscallNames()
    numbers = json.dumps({name: names.number(X86_64, name) for name in chosen})
    results = {}
    for label, profile in (("learned", learned_profile_path()),
                           ("notebook", notebook_profile_path())):
        code, logs, _ = run_in_notebook(client, ["python3", "-c", PROBE, numbers],
                                        settings(profile), label="eperm")
        assert code == 0, logs
        results[label] = json.loads(logs.strip().splitlines()[-1])
    for name in chosen:
        assert results["learned"][name] == [-1, 1], f"{name} under learned: {results}"
        assert results["notebook"][name][1] != 1, f"{name} under notebook: {results}"


def test_32_bit_syscalls_are_refused(client: docker.DockerClient, settings: Any) -> None:
    """The notebook profile admits the i386 ABI; the learned one (x86_64 only) kills it."""
    results = {}
    for label, profile in (("learned", learned_profile_path()),
                           ("notebook", notebook_profile_path())):
        code, logs, _ = run_in_notebook(client, ["python3", "-c", I386_PROBE, I386_PROBE],
                                        settings(profile), label="i386")
        assert code == 0, logs
        results[label] = json.loads(logs.strip().splitlines()[-1])
    pid = results["notebook"]["out"]
    assert results["notebook"]["rc"] == 0 and len(pid) == 2 and pid[0] == pid[1], results
    assert results["learned"] == {"rc": -31, "out": []}, f"expected SIGSYS: {results}"


def test_recorder_records_only_the_containers_syscalls(tmp_path: Path) -> None:
    """The command line, on one short workload: its records, none of the host's."""
    out = tmp_path / "recording.json"
    proc = subprocess.run(
        [sys.executable, "-m", "jovial_guard.cli", "profile", "record", "--workload", "files",
         "--out", str(out)], capture_output=True, text=True, timeout=600,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    recording = json.loads(out.read_text())
    run = recording["workloads"]["files"]
    assert run["ok"] and recording["lost"] == 0 and run["records"] > 100
    assert {"openat", "fsync", "flock", "rename", "symlink", "execve"} <= set(run["syscalls"])
    host_python = os.path.realpath(sys.executable)
    assert host_python not in run["executables"], "the recorder's own marker leaked in"
    # "/runc": the runtime's own init (runc >= 1.2 runs it from a sealed copy of itself)
    # between loading the filter and exec'ing the workload.
    assert set(run["executables"]) <= {"/", "/runc", "/usr/bin/python3.11"}, run["executables"]
    learned = allowed_names(load_json(learned_profile_path(), what="learned"))
    assert set(recording["syscalls"]) - set(learned) <= {"futex"}, (
        "a fresh recording of the files workload needs syscalls the learned profile refuses")
