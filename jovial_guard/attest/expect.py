"""What a running notebook must look like, from the hardening record of its decision.

Why a typed value: the embedded record (``SpawnRecord.hardening``) and a Kubernetes pod's
rendered security context say the same things in different shapes; both become one
:class:`Expected`, which :mod:`.compare` checks the kernel's view against. ``None`` means
"this path does not promise it" (never "anything goes" for something the record states).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedInput
from ..hardening.quantity import to_bytes, to_nano_cpus
from ..runtime.procfs import IDENTITY_MAP, IdMap

#: Linux capability numbers (include/uapi/linux/capability.h).
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
ALL_CAPS = (1 << len(CAPABILITIES)) - 1
NETNS_PREFIX = "ns:/run/netns/"


class RecordUnusable(MalformedInput):
    """The hardening record lacks what attestation compares against; the message says what."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    pids: int | None = None
    nano_cpus: int | None = None


@dataclass(frozen=True)
class Expected:
    seccomp: bool
    no_new_privs: bool
    #: Capabilities any set (effective, permitted, bounding) may hold.
    cap_mask: int
    read_only_root: bool
    uid_map: IdMap | None
    gid_map: IdMap | None
    limits: Limits
    #: The project namespace the container must be in (None: not on this path).
    netns: str | None = None
    #: Host ids ``[start, start + count)`` every mapped id must fall in, when the engine
    #: picks the exact map at start (``user_namespace.host_range``).
    host_id_range: tuple[int, int] | None = None
    ruleset_digest: str | None = None


def cap_bits(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        key = name.upper().removeprefix("CAP_")
        if key == "ALL":
            return ALL_CAPS
        if key not in CAPABILITIES:
            raise RecordUnusable(f"unknown capability {name!r}")
        mask |= 1 << CAPABILITIES.index(key)
    return mask


def allowed_caps(drop: Iterable[str], add: Iterable[str]) -> int:
    """What may remain: ``add`` when ALL is dropped, else everything not dropped."""
    dropped = cap_bits(drop)
    return cap_bits(add) if dropped == ALL_CAPS else (ALL_CAPS & ~dropped) | cap_bits(add)


def _id_map(value: Any, what: str) -> IdMap:
    """Rows ``[[inside, outside, count], ...]``, or the engine's own notation
    ``"inside:outside:count[,...]"`` (what the spawn record carries for podman)."""
    if isinstance(value, str):
        value = [row.split(":") for row in value.split(",") if row]
    try:
        rows = tuple((int(a), int(b), int(c)) for a, b, c in value)
    except (TypeError, ValueError) as exc:
        raise RecordUnusable(f"{what} must be a list of [inside, outside, count]: {exc}") from None
    if not rows:
        raise RecordUnusable(f"{what} is empty")
    return rows


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _host_range(userns: Mapping[str, Any]) -> tuple[int, int] | None:
    if "host_range" not in userns:
        return None
    start, count = (int(v) for v in userns["host_range"])
    if start <= 0 or count <= 0:
        raise RecordUnusable(f"user_namespace.host_range {userns['host_range']!r} must be [start > 0, count > 0]")
    return start, count


def from_hardening(hardening: Mapping[str, Any]) -> Expected:
    """The embedded record (``SpawnRecord.hardening``). ``user_namespace`` states the exact
    maps (``uid_map``/``gid_map``: ``[[inside, outside, count]]`` or ``"inside:outside:count"``) or only the host range the
    engine picks them from (``host_range``: ``[start, count]``); without it the container
    shares the host's ids (identity map), and that is what is expected then."""
    try:
        caps = hardening.get("capabilities") or {}
        userns = hardening.get("user_namespace") or {}
        ranged = _host_range(userns)
        limits = hardening.get("limits") or {}
        mode = str(hardening.get("network_mode") or "")
        return Expected(
            seccomp=(hardening.get("seccomp") or {}).get("status") == "applied",
            no_new_privs=bool(hardening.get("no_new_privileges")),
            cap_mask=allowed_caps(caps.get("drop") or (), caps.get("add") or ()),
            read_only_root=bool(hardening.get("read_only_root")),
            uid_map=_id_map(userns["uid_map"], "uid_map") if "uid_map" in userns else None if ranged else IDENTITY_MAP,
            gid_map=_id_map(userns["gid_map"], "gid_map") if "gid_map" in userns else None if ranged else IDENTITY_MAP,
            host_id_range=ranged,
            limits=Limits(memory_bytes=_optional_int(limits.get("memory_bytes")),
                          pids=_optional_int(limits.get("pids")),
                          nano_cpus=_optional_int(limits.get("nano_cpus"))),
            netns=mode[len(NETNS_PREFIX):] if mode.startswith(NETNS_PREFIX) else None,
            ruleset_digest=str(hardening["ruleset_digest"]) if hardening.get("ruleset_digest") else None,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise RecordUnusable(f"hardening record is malformed: {exc}") from None


def from_pod(pod: Mapping[str, Any], container: str) -> Expected:
    """A notebook pod as the API server holds it (after the webhook's patch).

    The kubelet puts limits on the container's cgroup (memory, CPU quota); the pids limit
    is the node's ``podPidsLimit`` on the pod's cgroup, so it is not a container promise.
    """
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    match = [c for c in spec.get("containers") or [] if c.get("name") == container]
    if not match:
        raise RecordUnusable(f"pod has no container {container!r}")
    ctx = match[0].get("securityContext") or {}
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    caps = ctx.get("capabilities") or {}
    limits = (match[0].get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    cpu = limits.get("cpu")
    user_ns = spec.get("hostUsers") is False
    return Expected(
        seccomp=seccomp in ("RuntimeDefault", "Localhost"),
        no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
        cap_mask=allowed_caps(caps.get("drop") or (), caps.get("add") or ()),
        read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
        uid_map=None if user_ns else IDENTITY_MAP,
        gid_map=None if user_ns else IDENTITY_MAP,
        limits=Limits(memory_bytes=to_bytes(memory) if memory is not None else None,
                      nano_cpus=to_nano_cpus(cpu) if cpu is not None else None),
    )
