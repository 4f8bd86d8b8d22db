"""Audited seccomp profiles: every EPERM refusal is answered by the audit agent, and recorded.

Why user notification: the kernel writes an audit record for a filter's answer only when
the filter was installed with ``SECCOMP_FILTER_FLAG_LOG``, which Debian 12's runc 1.1.5
refuses ("seccomp flags are not yet supported by runc"); and a syscall-exit audit rule
never sees the call, because a filter that answers ERRNO skips the syscall before audit's
entry hook runs. runc >= 1.1 does support ``SCMP_ACT_NOTIFY`` with the profile's
``listenerPath``: at container creation runc hands the filter's notification descriptor to
the process listening there (:mod:`jovial_guard.audit.seccomp_agent`), which then receives
every refused call, answers EPERM (what the profile itself answers) and records it.

:func:`audited_profile` is pure: the same profile, listener and syscall table always give
the same JSON. What changes: each argument-free ``SCMP_ACT_ERRNO`` rule answering EPERM
becomes ``SCMP_ACT_NOTIFY``, and when the profile's default answer is EPERM (a learned
allowlist), every native syscall no rule names gets a notify rule of its own (runc cannot
make notify the default action). Unchanged: allow rules, argument filters (clone without
namespace flags, the socket families), other errnos (clone3's ENOSYS, which libc needs),
and the default action itself. If the agent is not listening, runc refuses to create the
container ("failed to connect with seccomp agent"); if the agent goes away later, the
kernel answers the notified calls ENOSYS: still refused, no longer recorded.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .seccomp import SeccompProfileInvalid, render, validate_profile_file

EPERM = 1
NOTIFY = "SCMP_ACT_NOTIFY"
#: runc loads the filter and then still calls these itself before exec; a notify rule on
#: them would wait on the agent for runc's own work (they are allowed by every profile
#: anyway, so this only guards against a profile that refuses them).
RUNC_NEEDS = frozenset({"write", "close", "futex", "execve", "read", "exit", "exit_group"})


def _refuses_with_eperm(rule: dict[str, Any]) -> bool:
    return (rule.get("action") == "SCMP_ACT_ERRNO" and not rule.get("args")
            and int(rule.get("errnoRet", EPERM)) == EPERM)


def audited_profile(profile: dict[str, Any], *, listener: str, metadata: str,
                    native: Iterable[str]) -> dict[str, Any]:
    """``profile`` with its EPERM refusals routed to the agent at ``listener`` (pure).

    ``native`` is every syscall name of the host's architecture (libseccomp's table);
    ``metadata`` reaches the agent with the descriptor (the profile's policy name).
    """
    if not listener.startswith("/"):
        raise SeccompProfileInvalid(f"the seccomp agent socket {listener!r} must be an absolute path")
    out = copy.deepcopy(profile)
    named: set[str] = set()
    rules: list[dict[str, Any]] = []
    for rule in out.get("syscalls", []):
        named.update(rule.get("names", []))
        if _refuses_with_eperm(rule):
            kept = [n for n in rule["names"] if n in RUNC_NEEDS]
            notified = [n for n in rule["names"] if n not in RUNC_NEEDS]
            if kept:
                rules.append({**rule, "names": kept})
            if notified:
                rule = {k: v for k, v in rule.items() if k not in ("errnoRet", "errno")}
                rules.append({**rule, "names": notified, "action": NOTIFY})
            continue
        rules.append(rule)
    if out.get("defaultAction") == "SCMP_ACT_ERRNO" and int(out.get("defaultErrnoRet", 0)) == EPERM:
        rest = sorted(set(native) - named - RUNC_NEEDS)
        if rest:
            rules.append({"names": rest, "action": NOTIFY, "args": [], "includes": {},
                          "excludes": {}, "comment": "jovial_guard audited: not in the allowlist; "
                                                     "the agent answers EPERM and records the call"})
    out["syscalls"] = rules
    out["listenerPath"] = listener
    out["listenerMetadata"] = metadata
    return out


def write_audited(source: Path, *, name: str, listener: Path, directory: Path,
                  native: Iterable[str]) -> Path:
    """Write (once) and return the audited variant of the validated profile ``source``.

    Content-addressed (``<stem>-<sha256 prefix>.json``), so a changed profile or socket
    gives a new file and a container keeps the file it started with.
    """
    doc = json.loads(validate_profile_file(source).read_text())
    text = render(audited_profile(doc, listener=str(listener), metadata=name, native=native))
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    target = Path(directory) / f"{source.stem}-{tag}.json"
    if not target.exists() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        atomic_write(target, text.encode(), mode=0o644, durable=False)
    return validate_profile_file(target)
