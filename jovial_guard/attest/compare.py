"""Compare what the kernel enforces (:mod:`.observe`) with the record (:mod:`.expect`). Pure.

Each difference is a :class:`Drift` with a ``kind`` the response rules can match on
(``seccomp``, ``no_new_privs``, ``capabilities``, ``user_namespace``, ``mount``, ``limits``,
``network``, ``ruleset``) and a detail naming the process and the values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.procfs import ProcessSecurity
from .expect import Expected
from .observe import Observation

KINDS = ("seccomp", "no_new_privs", "capabilities", "user_namespace", "mount", "limits", "network", "ruleset")


@dataclass(frozen=True, order=True)
class Drift:
    kind: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


def _who(p: ProcessSecurity) -> str:
    return f"pid {p.pid} ({p.name or '?'})"


def _process_drifts(expected: Expected, p: ProcessSecurity) -> list[Drift]:
    out = []
    if expected.seccomp and (p.seccomp != 2 or p.seccomp_filters < 1):
        out.append(Drift("seccomp", f"{_who(p)}: Seccomp {p.seccomp}, {p.seccomp_filters} filter(s); "
                                    "expected mode 2 with a filter"))
    if expected.no_new_privs and p.no_new_privs != 1:
        out.append(Drift("no_new_privs", f"{_who(p)}: NoNewPrivs {p.no_new_privs}, expected 1"))
    for name, value in (("CapEff", p.cap_eff), ("CapPrm", p.cap_prm), ("CapBnd", p.cap_bnd)):
        if value < 0 or value & ~expected.cap_mask:
            out.append(Drift("capabilities", f"{_who(p)}: {name} {value & 0xFFFFFFFFFFFFFFFF:016x}, "
                                             f"allowed {expected.cap_mask:016x}"))
    for what, seen, want in (("uid_map", p.uid_map, expected.uid_map), ("gid_map", p.gid_map, expected.gid_map)):
        if want is not None and seen != want:
            out.append(Drift("user_namespace", f"{_who(p)}: {what} {list(seen)}, expected {list(want)}"))
        if want is None and any(outside == 0 for _, outside, _ in seen):
            out.append(Drift("user_namespace", f"{_who(p)}: {what} maps onto host id 0"))
        if expected.host_id_range is not None:
            start, count = expected.host_id_range
            if not seen or any(outside < start or outside + n > start + count for _, outside, n in seen):
                out.append(Drift("user_namespace", f"{_who(p)}: {what} {list(seen)} outside host ids "
                                                   f"{start}-{start + count - 1}"))
    return out


def compare(expected: Expected, seen: Observation) -> list[Drift]:
    """Every difference, sorted (so the same state always gives the same list)."""
    drifts: list[Drift] = []
    for process in seen.processes:
        drifts.extend(_process_drifts(expected, process))
    if expected.read_only_root:
        for path, mount in (("/", seen.root), ("/usr", seen.usr)):
            if mount is None or not mount.read_only:
                drifts.append(Drift("mount", f"{path} is mounted read-write (mount point {mount.point if mount else '?'})"))
    want, got = expected.limits, seen.limits
    for name, wanted, actual in (("memory", want.memory_bytes, got.memory_bytes if got else None),
                                 ("pids", want.pids, got.pids if got else None),
                                 ("cpu", want.nano_cpus, got.nano_cpus if got else None)):
        if wanted is not None and actual != wanted:
            drifts.append(Drift("limits", f"{name} limit {actual if actual is not None else 'none'}, expected {wanted}"))
    if seen.outside_cgroup:
        drifts.append(Drift("limits", "process(es) outside the container's cgroup: "
                                      + ", ".join(str(p) for p in seen.outside_cgroup)))
    if seen.foreign_netns:
        drifts.append(Drift("network", f"process(es) not in network namespace {expected.netns}: "
                                       + ", ".join(str(p) for p in seen.foreign_netns)))
    # A drop-all loaded by the audit service's cut_network response is an authorised state.
    if expected.ruleset_digest is not None and not seen.network_cut:
        if seen.ruleset_error is not None:
            drifts.append(Drift("ruleset", f"ruleset of {expected.netns} unreadable: {seen.ruleset_error}"))
        elif seen.ruleset_digest != expected.ruleset_digest:
            drifts.append(Drift("ruleset", f"ruleset of {expected.netns} changed: {seen.ruleset_digest}, "
                                           f"expected {expected.ruleset_digest}"))
    return sorted(set(drifts))


def summary(drifts: list[Drift], *, network_cut: bool = False) -> str:
    """``ok`` or ``drift: seccomp, ruleset`` (the kinds, in order): the dashboard's words;
    ``(network cut)`` is added while the response's drop-all is in place."""
    if network_cut:
        return summary(drifts) + " (network cut)"
    if not drifts:
        return "ok"
    return "drift: " + ", ".join(dict.fromkeys(d.kind for d in drifts))
