"""What the kernel enforces on one running container, read from the host.

The container is found by its first process (the engine's ``State.Pid``, the runtime's task
pid); every process in its pid or mount namespace belongs to it, including one entered from
outside with ``nsenter``. The ruleset is read inside the project's own namespace that the
record names, never the host's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..hardening.egress_digest import digest_listing, is_cut
from ..runtime import procfs
from ..runtime.procfs import CgroupLimits, Mount, ProcessSecurity

#: Returns the JSON listing of a project namespace's ruleset (``egress_digest.live_listing``).
RulesetReader = Callable[[str], str]


@dataclass(frozen=True)
class Observation:
    pid: int
    processes: tuple[ProcessSecurity, ...]
    root: Mount | None
    usr: Mount | None
    limits: CgroupLimits | None
    #: Processes whose memory or pids cgroup is not the container's (their limits are not its).
    outside_cgroup: tuple[int, ...] = ()
    #: Processes whose network namespace is not the project namespace of the record.
    foreign_netns: tuple[int, ...] = ()
    ruleset_digest: str | None = None
    #: Why the ruleset could not be read (the namespace is gone, nft failed).
    ruleset_error: str | None = None
    #: The ruleset is the audit response's drop-all (the network was cut on purpose).
    network_cut: bool = False


class ContainerGone(Exception):
    """The container's first process exited while it was being read."""


def _limit_paths(paths: Mapping[str, str]) -> tuple[str | None, str | None]:
    return paths.get("memory", paths.get("")), paths.get("pids", paths.get(""))


def observe(pid: int, *, netns: str | None = None, read_ruleset: RulesetReader | None = None,
            index: Mapping[str, list[int]] | None = None, proc_root: str = "/proc") -> Observation:
    """Read container ``pid``: every process's status and maps, the mounts of ``/`` and
    ``/usr``, its cgroup limits, and (``netns`` given) the ruleset digest in that namespace.

    Raises ContainerGone when ``pid`` itself has exited.
    """
    proc = Path(proc_root)
    mounts = procfs.read_mounts(pid, proc=proc)
    cgroups = procfs.read_cgroups(pid, proc=proc)
    first = procfs.read_security(pid, proc=proc)
    if mounts is None or cgroups is None or first is None:
        raise ContainerGone(f"process {pid} has exited")
    own_paths = _limit_paths(cgroups)
    expected_net = os.stat(f"/run/netns/{netns}").st_ino if netns and os.path.exists(f"/run/netns/{netns}") else None
    processes, outside, foreign = [], [], []
    for other in procfs.processes_sharing(pid, proc=proc, index=index):
        security = first if other == pid else procfs.read_security(other, proc=proc)
        if security is None:
            continue  # exited between the scan and the read
        processes.append(security)
        paths = procfs.read_cgroups(other, proc=proc)
        if paths is not None and _limit_paths(paths) != own_paths:
            outside.append(other)
        if expected_net is not None:
            try:
                if os.stat(proc / str(other) / "ns" / "net").st_ino != expected_net:
                    foreign.append(other)
            except OSError:
                pass
    digest = error = None
    cut = False
    if netns and read_ruleset is not None:
        try:
            listing = read_ruleset(netns)
            digest, cut = digest_listing(listing), is_cut(listing)
        except Exception as exc:  # noqa: BLE001 - an unreadable ruleset is reported, not raised
            error = f"{type(exc).__name__}: {exc}"[:300]
    return Observation(
        pid=pid, processes=tuple(processes), root=procfs.mount_at(mounts, "/"),
        usr=procfs.mount_at(mounts, "/usr"), limits=procfs.limits_of(cgroups),
        outside_cgroup=tuple(outside), foreign_netns=tuple(foreign),
        ruleset_digest=digest, ruleset_error=error, network_cut=cut,
    )
