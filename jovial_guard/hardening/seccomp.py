"""The notebook seccomp profile: the engine's default allowlist, tightened.

Why derive instead of hand-write: the engine's default (containers-common's
``seccomp.json``) is the allowlist everyone tests against, so a notebook keeps working
the way any container does. On top of it notebooks lose the kernel surfaces an analysis
session never needs and container escapes love: new namespaces (unshare, setns, clone with
namespace flags), mounting, the key store, userfaultfd, bpf, perf, io_uring, kexec and
module loading, ptrace and cross-process memory access, and the admin syscalls the base
only allows with capabilities (notebooks run with none, so capability-conditional rules
are dropped and the profile means the same whatever capabilities a caller forgets).

``build_notebook_profile`` is a pure, deterministic function; the committed
``profiles/seccomp/notebook.json`` must equal its output for the installed base::

    python -m jovial_guard.hardening.seccomp --check    # exit 1 if the file drifted
    python -m jovial_guard.hardening.seccomp --write    # regenerate it
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import Misconfigured

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_PROFILE = Path("/usr/share/containers/seccomp.json")

#: Syscalls a notebook may never make; each answers EPERM.
DENIED_SYSCALLS: dict[str, tuple[str, ...]] = {
    "new namespaces": ("unshare", "setns"),
    "mounting and changing root": (
        "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
        "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    ),
    "kernel key store": ("keyctl", "add_key", "request_key"),
    "kernel attack surface": (
        "userfaultfd", "bpf", "perf_event_open", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "lookup_dcookie", "fanotify_init", "open_by_handle_at",
        "name_to_handle_at", "uselib", "nfsservctl", "_sysctl", "sysfs", "ustat",
    ),
    "kexec and kernel modules": (
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "create_module", "query_module", "get_kernel_syms",
    ),
    "tracing other processes": (
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "process_madvise",
    ),
    "machine administration": (
        "reboot", "syslog", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
        "iopl", "ioperm", "settimeofday", "stime", "clock_settime", "clock_settime64",
        "sethostname", "setdomainname", "vhangup",
    ),
}
DENIED = frozenset(name for names in DENIED_SYSCALLS.values() for name in names)
#: Namespace flags of clone(2): CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38
MIPS_ENOSYS = 89
MIPS_ARCHES = ["mips3l64n32", "mips64", "mips64n32", "mipsel", "mipsel64"]
#: Rules of the base we replace wholesale (clone family) or that make no sense without caps.
_REPLACED = frozenset({"clone", "clone3", "personality"})


class SeccompProfileInvalid(Misconfigured):
    """A seccomp profile file is missing, unreadable, or weaker than the notebook policy."""


def notebook_profile_path() -> Path:
    """The committed notebook profile (what ``security_opt=seccomp=...`` must name)."""
    return REPO_ROOT / "profiles" / "seccomp" / "notebook.json"


#: How the policy names a project profile: ``jovial-guard/<name>.json``, the path below the
#: kubelet's seccomp directory where the node agent installs ``profiles/seccomp/<name>.json``.
LOCALHOST_PREFIX = "jovial-guard/"
_PROFILE_FILE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\.json$")


def localhost_profile_file(localhost_profile: str | None, directory: Path | str) -> Path:
    """The validated file in ``directory`` that a policy's Localhost profile name means.

    The embedded engine reads the same files the node agent installs, so the decision's
    ``jovial-guard/notebook-learned.json`` is ``<directory>/notebook-learned.json``. Any
    other shape (another prefix, a path, a missing or weak file) raises
    :class:`SeccompProfileInvalid`: the caller refuses the container.
    """
    name = localhost_profile or ""
    file = name.removeprefix(LOCALHOST_PREFIX)
    if not name.startswith(LOCALHOST_PREFIX) or not _PROFILE_FILE.match(file):
        raise SeccompProfileInvalid(
            f"seccomp profile {name!r} is not a project profile: the policy must name "
            f"'{LOCALHOST_PREFIX}<name>.json' for a file in {directory}"
        )
    return validate_profile_file(Path(directory) / file)


def validate_profile_dir(directory: Path | str) -> dict[str, Path]:
    """Every ``*.json`` profile in ``directory`` by policy name, validated; refuses none."""
    folder = Path(directory)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise SeccompProfileInvalid(f"no seccomp profiles (*.json) in {folder}")
    return {LOCALHOST_PREFIX + f.name: validate_profile_file(f) for f in files}


def _rule(names: list[str], action: str, *, comment: str, errno: int | None = None,
          errno_name: str | None = None, args: list[dict[str, Any]] | None = None,
          includes: dict[str, Any] | None = None,
          excludes: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "names": names,
        "action": action,
        "args": args or [],
        "comment": comment,
        "includes": includes or {},
        "excludes": excludes or {},
    }
    if errno is not None:
        rule["errnoRet"] = errno
        rule["errno"] = errno_name or ""
    return rule


def build_notebook_profile(base: dict[str, Any]) -> dict[str, Any]:
    """Tighten the engine's default profile for notebooks (pure, deterministic)."""
    if base.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                         "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"):
        raise SeccompProfileInvalid("base profile does not deny by default; refusing to derive")
    base_digest = hashlib.sha256(
        json.dumps(base, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    kept: list[dict[str, Any]] = []
    personality: list[dict[str, Any]] = []
    for original in base.get("syscalls", []):
        rule = copy.deepcopy(original)
        includes = rule.get("includes") or {}
        excludes = dict(rule.get("excludes") or {})
        if includes.get("caps"):
            continue  # only applies with a capability; notebooks have none
        excludes.pop("caps", None)
        rule["excludes"] = excludes
        names = [n for n in rule["names"] if n not in DENIED]
        if rule["action"] == "SCMP_ACT_ALLOW" and "personality" in names and rule.get("args"):
            personality.append(rule)  # argument-restricted personalities stay as they are
            continue
        names = [n for n in names if n not in _REPLACED]
        if not names:
            continue
        rule["names"] = names
        kept.append(rule)

    denied = [
        _rule(sorted(names), "SCMP_ACT_ERRNO", errno=1, errno_name="EPERM",
              comment=f"jovial_guard notebook: no {why}")
        for why, names in DENIED_SYSCALLS.items()
    ]
    mask = [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
             "op": "SCMP_CMP_MASKED_EQ"}]
    s390_mask = [{"index": 1, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                  "op": "SCMP_CMP_MASKED_EQ"}]
    clone_rules = [
        _rule(["clone"], "SCMP_ACT_ALLOW", args=mask,
              excludes={"arches": ["s390", "s390x"]},
              comment="jovial_guard notebook: clone only without namespace flags"),
        _rule(["clone"], "SCMP_ACT_ALLOW", args=s390_mask,
              includes={"arches": ["s390", "s390x"]},
              comment="jovial_guard notebook: clone only without namespace flags (s390)"),
        _rule(["clone3"], "SCMP_ACT_ERRNO", errno=ENOSYS, errno_name="ENOSYS",
              excludes={"arches": list(MIPS_ARCHES)},
              comment="jovial_guard notebook: clone3 flags cannot be filtered; ENOSYS makes "
                      "libc fall back to clone"),
        _rule(["clone3"], "SCMP_ACT_ERRNO", errno=MIPS_ENOSYS, errno_name="ENOSYS",
              includes={"arches": list(MIPS_ARCHES)},
              comment="jovial_guard notebook: clone3 ENOSYS (mips numbering)"),
    ]
    denied[0]["comment"] += f" (derived from engine default sha256:{base_digest})"
    return {
        "defaultAction": base["defaultAction"],
        "defaultErrnoRet": base.get("defaultErrnoRet", ENOSYS),
        "defaultErrno": base.get("defaultErrno", "ENOSYS"),
        "archMap": copy.deepcopy(base.get("archMap", [])),
        "syscalls": denied + kept + personality + clone_rules,
    }


def render(profile: dict[str, Any]) -> str:
    """The profile as committed: stable key order, two-space indent, final newline."""
    return json.dumps(profile, indent=2, sort_keys=True) + "\n"


def load_base(path: Path = BASE_PROFILE) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SeccompProfileInvalid(
            f"engine default seccomp profile {path} is missing: install "
            "golang-github-containers-common (scripts/install-system.sh)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SeccompProfileInvalid(f"engine default seccomp profile {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise SeccompProfileInvalid(f"engine default seccomp profile {path} is not an object")
    return doc


def validate_profile_file(path: Path | str) -> Path:
    """Refuse a profile file that is missing, broken, or lets a notebook do a denied thing.

    Returns the absolute path to hand to the engine (``seccomp=<path>``). Raises
    :class:`SeccompProfileInvalid`; a caller must then refuse to start the container.
    """
    file = Path(path).absolute()
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise SeccompProfileInvalid(f"seccomp profile {file} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise SeccompProfileInvalid(f"seccomp profile {file} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("syscalls"), list):
        raise SeccompProfileInvalid(f"seccomp profile {file} has no 'syscalls' list")
    if doc.get("defaultAction") in (None, "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        raise SeccompProfileInvalid(
            f"seccomp profile {file} does not deny by default (defaultAction "
            f"{doc.get('defaultAction')!r})"
        )
    for rule in doc["syscalls"]:
        if not isinstance(rule, dict) or not isinstance(rule.get("names"), list):
            raise SeccompProfileInvalid(f"seccomp profile {file} has a malformed rule: {rule!r}")
        if rule.get("action") == "SCMP_ACT_ALLOW":
            leaked = sorted(DENIED.intersection(rule["names"]))
            if leaked:
                raise SeccompProfileInvalid(
                    f"seccomp profile {file} allows {', '.join(leaked)}, which notebooks must "
                    "never call"
                )
    return file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        expected = render(build_notebook_profile(load_base()))
    except SeccompProfileInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = notebook_profile_path()
    if "--write" in args:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(expected)
        print(f"wrote {target}")
        return 0
    if "--check" in args:
        current = target.read_text() if target.exists() else ""
        if current != expected:
            print(f"{target} differs from the profile generated from {BASE_PROFILE}; "
                  "run: python -m jovial_guard.hardening.seccomp --write", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    sys.stdout.write(expected)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
