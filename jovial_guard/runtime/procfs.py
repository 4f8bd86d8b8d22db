"""Read a process's kernel-enforced hardening from ``/proc`` and its cgroup's limits.

Why one module: the attestation loops (audit service, node agent) and the tests that check
a container from the host read the same fields the same way: ``Seccomp`` and
``Seccomp_filters``, ``NoNewPrivs``, the capability sets, the user-namespace maps, the
mount flags and the cgroup limits. Parsers are pure (``parse_*``, tested on literal text);
readers return None when the process is gone, since processes may exit at any moment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The whole 32-bit id space mapped onto itself: no user namespace.
IDENTITY_MAP: tuple[tuple[int, int, int], ...] = ((0, 0, 4294967295),)

IdMap = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ProcessSecurity:
    """What the kernel enforces on one process (``/proc/PID/status`` and the id maps)."""

    pid: int
    name: str
    seccomp: int
    seccomp_filters: int
    no_new_privs: int
    cap_eff: int
    cap_prm: int
    cap_bnd: int
    uid_map: IdMap
    gid_map: IdMap


@dataclass(frozen=True)
class Mount:
    """One ``mountinfo`` line: the mount point and its per-mount options (``ro``, ``nosuid``...)."""

    point: str
    options: frozenset[str]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


@dataclass(frozen=True)
class CgroupLimits:
    """The limits of a cgroup (None: unlimited or the controller is absent)."""

    memory_bytes: int | None
    pids: int | None
    cpu_quota_us: int | None
    cpu_period_us: int | None

    @property
    def nano_cpus(self) -> int | None:
        """The CPU limit in the engine's unit (1e9 = one CPU), from quota / period."""
        if self.cpu_quota_us is None or not self.cpu_period_us:
            return None
        return self.cpu_quota_us * 1_000_000_000 // self.cpu_period_us


def parse_status(text: str) -> dict[str, str]:
    """``/proc/PID/status`` as ``{"Seccomp": "2", "CapEff": "0000000000000000", ...}``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def parse_id_map(text: str) -> IdMap:
    """``uid_map``/``gid_map`` lines ``INSIDE OUTSIDE COUNT``."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return tuple(rows)


def security_from(pid: int, status: Mapping[str, str], uid_map: IdMap, gid_map: IdMap) -> ProcessSecurity:
    """Pure: the fields of a parsed status. A field the kernel lacks reads as -1 (never 'ok')."""
    def num(key: str, base: int = 10) -> int:
        try:
            return int(status[key], base)
        except (KeyError, ValueError):
            return -1

    return ProcessSecurity(
        pid=pid, name=status.get("Name", ""), seccomp=num("Seccomp"),
        seccomp_filters=num("Seccomp_filters"), no_new_privs=num("NoNewPrivs"),
        cap_eff=num("CapEff", 16), cap_prm=num("CapPrm", 16), cap_bnd=num("CapBnd", 16),
        uid_map=uid_map, gid_map=gid_map,
    )


def read_security(pid: int, *, proc: Path = PROC) -> ProcessSecurity | None:
    """The hardening of ``pid`` as the kernel reports it; None if it has exited."""
    base = proc / str(pid)
    try:
        status = parse_status((base / "status").read_text())
        uid_map = parse_id_map((base / "uid_map").read_text())
        gid_map = parse_id_map((base / "gid_map").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None
    return security_from(pid, status, uid_map, gid_map)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> tuple[Mount, ...]:
    """Mounts in ``mountinfo`` order (later lines cover earlier ones at the same point)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        mounts.append(Mount(point=_unescape(fields[4]), options=frozenset(fields[5].split(","))))
    return tuple(mounts)


def mount_at(mounts: Iterable[Mount], path: str) -> Mount | None:
    """The mount that ``path`` lives on: the longest covering mount point, the last one
    mounted when several share it (the top of the stack)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        if path == point or point == "/" or path.startswith(point + "/"):
            if best is None or len(point) >= len(best.point.rstrip("/") or "/"):
                best = mount
    return best


def read_mounts(pid: int, *, proc: Path = PROC) -> tuple[Mount, ...] | None:
    try:
        return parse_mountinfo((proc / str(pid) / "mountinfo").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as ``{controller: path}``; the v2 unified path under ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def _read_int(path: Path) -> int | None:
    """A limit file's number; None for ``max``, a missing file, or v1's "no limit" values."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("max", "-1", ""):
        return None
    try:
        value = int(text.split()[0])
    except ValueError:
        return None
    return None if value >= 0x7FFFFFFFFFFFF000 else value  # v1 memory: PAGE_COUNTER_MAX pages


def limits_of(paths: Mapping[str, str], *, root: Path = CGROUP_ROOT) -> CgroupLimits:
    """The limits of the cgroups named in ``paths`` (v1 controllers, else v2 unified)."""
    def v1(controller: str, name: str) -> int | None:
        if controller not in paths:
            return None
        return _read_int(root / controller / paths[controller].lstrip("/") / name)

    if "memory" in paths or "pids" in paths:
        return CgroupLimits(memory_bytes=v1("memory", "memory.limit_in_bytes"), pids=v1("pids", "pids.max"),
                            cpu_quota_us=v1("cpu", "cpu.cfs_quota_us"), cpu_period_us=v1("cpu", "cpu.cfs_period_us"))
    unified = root / paths.get("", "/").lstrip("/")
    quota = period = None
    try:
        q, p = (unified / "cpu.max").read_text().split()
        quota, period = (None if q == "max" else int(q)), int(p)
    except (OSError, ValueError):
        pass
    return CgroupLimits(memory_bytes=_read_int(unified / "memory.max"), pids=_read_int(unified / "pids.max"),
                        cpu_quota_us=quota, cpu_period_us=period)


def read_cgroups(pid: int, *, proc: Path = PROC) -> dict[str, str] | None:
    try:
        return parse_cgroup((proc / str(pid) / "cgroup").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def start_time(pid: int, *, proc: Path = PROC) -> int | None:
    """The process's start time in clock ticks since boot (``stat`` field 22): with the pid,
    it names one process for good (a reused pid has another start time)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


def namespace_id(pid: int, kind: str, *, proc: Path = PROC) -> str | None:
    """``/proc/PID/ns/KIND``'s link (``pid:[4026532201]``); None if the process is gone or
    is not ours to inspect (a supervisor outside this host's user namespace)."""
    try:
        return os.readlink(proc / str(pid) / "ns" / kind)
    except OSError:
        return None


def namespace_index(*, kinds: tuple[str, ...] = ("pid", "mnt"), proc: Path = PROC) -> dict[str, list[int]]:
    """``{namespace link: [pids]}`` over every process, read once per attestation pass."""
    index: dict[str, list[int]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        for kind in kinds:
            ns = namespace_id(pid, kind, proc=proc)
            if ns is not None:
                index.setdefault(ns, []).append(pid)
    return index


def processes_sharing(pid: int, *, kinds: tuple[str, ...] = ("pid", "mnt"), proc: Path = PROC,
                      index: Mapping[str, list[int]] | None = None) -> list[int]:
    """Every process in any of ``pid``'s namespaces of ``kinds`` (``pid`` itself included).

    Why namespaces and not the cgroup: a process entered into a container with ``nsenter``
    (or ``setns``) joins its namespaces but not its cgroup, and that is exactly the process
    attestation must find. ``index`` (from :func:`namespace_index`) saves a scan of ``/proc``.
    """
    targets = {ns for kind in kinds if (ns := namespace_id(pid, kind, proc=proc)) is not None}
    if not targets:
        return []
    if index is None:
        index = namespace_index(kinds=kinds, proc=proc)
    return sorted({other for ns in targets for other in index.get(ns, ())})
