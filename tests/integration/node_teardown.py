"""Tear the single-node cluster down completely, and say what (if anything) survived.

Order matters: pods are deleted through the kubelet first (so containerd stops sandboxes and
the CNI plugin removes their veths and addresses), then the node's daemons stop, then what a
crash could have left is removed by id: containerd tasks, processes still in the kubelet's
cgroups or naming the cluster's directory, mounts under it, the bridges, the cgroups.
Each step runs even if an earlier one failed; the first error is raised at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node_cluster import NodeCluster


def _api(cluster: NodeCluster, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    req = urllib.request.Request(cluster.control.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=cluster.control.ssl_context(), timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def delete_all_pods(cluster: NodeCluster, *, timeout: float = 90.0) -> None:
    """Delete every pod with a short grace period and wait until the kubelet has let go."""
    pods = _api(cluster, "GET", "/api/v1/pods")["items"]
    for pod in pods:  # type: ignore[attr-defined]
        meta = pod["metadata"]
        _api(cluster, "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
             {"gracePeriodSeconds": 1})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _api(cluster, "GET", "/api/v1/pods")["items"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"pods still present {timeout}s after deletion")


def _run_cgroups(cluster: NodeCluster) -> list[Path]:
    return [p for p in cluster.cgroup_dirs() if p.is_dir()]


def _cgroup_pids(cluster: NodeCluster) -> set[int]:
    pids: set[int] = set()
    for top in _run_cgroups(cluster):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def _pids_naming(directory: Path) -> set[int]:
    needle = str(directory).encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            pass
    return found


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == str(directory):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _kill_tasks(cluster: NodeCluster) -> None:
    listed = cluster.ctr("containers", "ls", "-q")
    for cid in listed.stdout.split():
        cluster.ctr("tasks", "kill", "-a", "-s", "SIGKILL", cid)
        cluster.ctr("tasks", "delete", "-f", cid)
        cluster.ctr("containers", "delete", cid)


def _kill_pids(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5 if pids else 0)


def _remove_cgroups(cluster: NodeCluster) -> None:
    for top in _run_cgroups(cluster):
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            directory.rmdir()
        top.rmdir()


def teardown(cluster: NodeCluster) -> None:
    errors: list[BaseException] = []

    def step(action: Callable[[], object], what: str = "") -> None:
        try:
            cluster.timed(what, action) if what else action()
        except BaseException as exc:  # noqa: BLE001 - every step runs; the first error is raised
            errors.append(exc)

    if "kubelet" in cluster.procs and cluster.procs["kubelet"].poll() is None:
        step(lambda: delete_all_pods(cluster), "pods deleted")
    for name in ("kubelet", "kube-controller-manager", "kube-scheduler"):
        step(lambda name=name: cluster.stop_process(name), f"{name} stopped")  # type: ignore[misc]
    if "containerd" in cluster.procs and cluster.procs["containerd"].poll() is None:
        step(lambda: _kill_tasks(cluster), "containerd tasks removed")
    step(lambda: cluster.stop_process("containerd"), "containerd stopped")
    # etcd and kube-apiserver name the directory too; they stop last, gracefully.
    control = {proc.pid for proc in cluster.control.procs}
    step(lambda: _kill_pids((_cgroup_pids(cluster) | _pids_naming(cluster.dir)) - control), "leftover processes killed")
    for point in _mounts_under(cluster.dir):
        step(lambda point=point: subprocess.run(["umount", point], check=False, capture_output=True).returncode == 0
             or subprocess.run(["umount", "-l", point], check=True, capture_output=True))  # type: ignore[misc]
    step(cluster.network.remove)
    for tunable, value in cluster.tunables.items():
        step(lambda t=tunable, v=value: (Path("/proc/sys") / t).write_text(v + "\n"))  # type: ignore[misc]
    step(lambda: _remove_cgroups(cluster))
    step(cluster.control.stop, "etcd + kube-apiserver stopped")
    # rm stays on the directory's file system: a mount that survived is not descended into.
    step(lambda: subprocess.run(["rm", "-rf", "--one-file-system", str(cluster.dir)], check=True), "directory removed")
    if errors:
        raise errors[0]


def leftovers(cluster: NodeCluster) -> list[str]:
    """Everything the cluster could leave behind that is still there (empty = clean)."""
    found = [f"process {pid}" for pid in sorted(_pids_naming(cluster.dir) | _cgroup_pids(cluster))]
    found += [f"mount {point}" for point in _mounts_under(cluster.dir)]
    found += [f"link {name}" for name in sorted(cluster.links())]
    found += [f"cgroup {path}" for path in _run_cgroups(cluster)]
    found += [f"directory {cluster.dir}"] if cluster.dir.exists() else []
    for tunable, value in cluster.tunables.items():
        now = (Path("/proc/sys") / tunable).read_text().strip()
        if now != value:
            found.append(f"sysctl {tunable}={now} (was {value})")
    netns = Path("/var/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith("cni-")]
    return found
