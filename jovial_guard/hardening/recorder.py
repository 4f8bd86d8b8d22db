"""Record the syscalls real notebook workloads make, in the container a spawn would make.

Each workload (``learn_workloads/*.py``) runs in its own container of the notebook image,
started through the project's podman service with exactly the settings the spawn hook
renders for the default notebook profile (``render_docker``: read-only root, tmpfs /tmp,
the home volume, uid 1000, no capabilities, no-new-privileges, limits) on network
``none``, under :func:`~jovial_guard.hardening.learn.logging_profile` of the committed
notebook profile. The only additions are two read-only binds: the workload scripts and a
directory with a wheel built here for the pip workload. Records are collected per
workload (the reader is synchronised after each container exits), so the recording says
which workload needed which syscall.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import secrets
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from ..decision import SecuritySpec
from ..runtime.image import NOTEBOOK_IMAGE, ensure_notebook_image, recipe_key
from ..runtime.podman import RUN_DIR, PodmanService
from .audit_netlink import AuditReader, SyscallNames, audit_status, start_audit_session
from .learn import RECORDING_VERSION, digest, logging_profile
from .render_docker import render_docker
from .seccomp import load_base, notebook_profile_path, render

WORKLOAD_DIR = Path(__file__).resolve().parent / "learn_workloads"
#: Order matters only for reading the log: the server first, as a spawn starts it first.
WORKLOADS = ("server", "kernel", "scientific", "files", "pip_wheel", "processes", "threads")
LABEL = "org.jovial-guard.profile-record"
WORKLOAD_MOUNT = "/opt/jovial-guard-workloads"
WHEEL_MOUNT = "/wheels"
#: The default notebook profile's spec as the policy decides it (policies/data.json).
DEFAULT_SPEC: dict[str, Any] = {
    "profile": "default", "notebook": True, "uid": 1000, "gid": 100, "fs_group": 100,
    "read_only_root": True, "writable_paths": ["/tmp", "/home/jovyan"],
    "capabilities": {"drop": ["ALL"], "add": []}, "no_new_privileges": True,
    "seccomp": {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"},
    "apparmor": {"type": "RuntimeDefault"},
    "resources": {"cpu_limit": "1", "memory_limit": "2Gi", "cpu_request": "100m",
                  "memory_request": "512Mi", "gpu": 0, "pids_limit": 1024},
    "egress": {"allow": [], "dns": [], "hub": [], "blocked": []}, "storage": None,
}

Progress = Callable[[str], None]


def build_probe_wheel(directory: Path) -> Path:
    """Write a tiny pure-Python wheel (a zip with ``*.dist-info``) into ``directory``.

    Written with ``zipfile`` so neither a build backend nor the network is needed.
    """
    name, version = "jg_learn_probe", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b'"""Installed by the profile recorder."""\n\n\ndef answer() -> int:\n'
                               b"    return 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: jovial_guard\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={sha},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data)
    wheel.chmod(0o644)
    directory.chmod(0o755)
    return wheel


def container_kwargs(*, seccomp_path: Path, home_volume: str, wheel_dir: Path) -> dict[str, Any]:
    """Arguments for docker-py's low-level ``create_container``: the spawn's rendering."""
    rendered = render_docker(
        SecuritySpec.from_json(DEFAULT_SPEC), seccomp_path=str(seccomp_path),
        apparmor_supported=False, network_mode="none", home_volume=home_volume,
    )
    binds = {name: dict(spec) for name, spec in rendered["volumes"].items()}
    binds[str(WORKLOAD_DIR)] = {"bind": WORKLOAD_MOUNT, "mode": "ro"}
    binds[str(wheel_dir)] = {"bind": WHEEL_MOUNT, "mode": "ro"}
    return {"user": rendered["user"], "host_config": rendered["host_config"], "binds": binds}


def run_in_notebook(client: docker.DockerClient, argv: list[str], kwargs: dict[str, Any], *,
                    label: str, timeout: float = 600.0) -> tuple[int, str, float]:
    """Run ``argv`` in a notebook container made from ``kwargs``; (exit code, output, s)."""
    api = client.api
    host_config = api.create_host_config(binds=kwargs["binds"], **kwargs["host_config"])
    created = api.create_container(
        NOTEBOOK_IMAGE, argv, user=kwargs["user"], host_config=host_config,
        labels={LABEL: label}, volumes=[spec["bind"] for spec in kwargs["binds"].values()],
    )
    started = time.monotonic()
    try:
        api.start(created["Id"])
        status = api.wait(created["Id"], timeout=timeout)
        logs = api.logs(created["Id"], stdout=True, stderr=True).decode(errors="replace")
    finally:
        api.remove_container(created["Id"], force=True)
    return int(status.get("StatusCode", -1)), logs, round(time.monotonic() - started, 1)


def run_workload(client: docker.DockerClient, name: str, kwargs: dict[str, Any], *,
                 timeout: float = 600.0) -> dict[str, Any]:
    """Run one workload to its end; its last output line is its JSON verdict."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    exit_code, logs, seconds = run_in_notebook(
        client, ["python3", f"{WORKLOAD_MOUNT}/{name}.py"], kwargs, label=name,
        timeout=timeout)
    lines = logs.strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else {}
    except ValueError:
        verdict = {}
    if not isinstance(verdict, dict):
        verdict = {}
    return {"ok": exit_code == 0 and verdict.get("ok") is True, "exit_code": exit_code,
            "seconds": seconds, "result": verdict,
            "log_tail": "" if exit_code == 0 else logs[-2000:]}


def record(*, workloads: tuple[str, ...] = WORKLOADS, command: str,
           progress: Progress = print) -> dict[str, Any]:
    """Run ``workloads`` under the logging profile and return the recording (version 1)."""
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    current_path = notebook_profile_path()
    current = load_base(current_path)
    session = start_audit_session()
    names = SyscallNames()
    runs: dict[str, Any] = {}
    lost_before = audit_status()["lost"]
    with tempfile.TemporaryDirectory(prefix="jg-profile-record-") as tmp, \
            AuditReader(session) as reader:
        work = Path(tmp)
        work.chmod(0o755)
        log_profile = work / "notebook-logging.json"
        log_profile.write_text(render(logging_profile(current)))
        log_profile.chmod(0o644)
        wheel_dir = work / "wheels"
        wheel_dir.mkdir()
        build_probe_wheel(wheel_dir)
        socket_path = RUN_DIR / f"profile-record-{os.getpid()}.sock"
        with PodmanService(socket_path=socket_path) as service:
            ensure_notebook_image(service, progress=progress)
            client = service.docker_client(timeout=900)
            home = f"jovial-guard-profile-record-{secrets.token_hex(4)}"
            client.volumes.create(name=home, labels={LABEL: "home"})
            try:
                kwargs = container_kwargs(seccomp_path=log_profile, home_volume=home,
                                          wheel_dir=wheel_dir)
                reader.sync()
                reader.take()
                for name in workloads:
                    progress(f"profile record: workload {name} ...")
                    run = run_workload(client, name, kwargs)
                    reader.sync()
                    records = reader.take()
                    counts = Counter(names.name(r.arch, r.syscall) for r in records)
                    run["syscalls"] = dict(sorted(counts.items()))
                    run["records"] = len(records)
                    run["executables"] = sorted({r.exe for r in records})
                    runs[name] = run
                    progress(f"profile record: workload {name}: "
                             f"{'ok' if run['ok'] else 'FAILED'} in {run['seconds']} s, "
                             f"{len(records)} records, {len(counts)} distinct syscalls")
            finally:
                client.volumes.get(home).remove(force=True)
                client.close()
    kernel_lost = audit_status()["lost"] - lost_before
    inside, outside = reader.namespace_check()
    used = sorted({name for run in runs.values() for name in run["syscalls"]})
    return {
        "version": RECORDING_VERSION,
        "command": command,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": "kernel audit netlink multicast (AUDIT_NLGRP_READLOG), type 1326 records "
                  "with code SECCOMP_RET_LOG from the recorder's own audit session",
        "profile": str(current_path.relative_to(current_path.parents[2])),
        "profile_sha256": digest(current),
        "image": NOTEBOOK_IMAGE,
        "image_recipe": recipe_key(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "lost": reader.lost + kernel_lost,
        "pids_in_container_namespace": inside,
        "pids_outside_container_namespace": outside,
        "records": sum(run["records"] for run in runs.values()),
        "workloads": runs,
        "syscalls": used,
    }
