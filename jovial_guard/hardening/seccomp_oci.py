"""A seccomp profile as an OCI runtime reads it, resolved for one architecture.

The committed profiles are in the engines' format (containers-common / moby): a rule may apply
only on some architectures (``includes.arches`` / ``excludes.arches``, Go's names: ``amd64``,
``arm64``, ...), and ``archMap`` lists the architectures a filter covers. podman resolves those
conditions itself. containerd's CRI, which reads the kubelet's ``Localhost`` profiles, does not:
it unmarshals the file straight into the OCI runtime spec's ``LinuxSeccomp``, which has no such
fields, so every rule applies on every architecture. For the notebook profile on x86_64 that
means both clone3 rules meet (ENOSYS 38 and mips' ENOSYS 89: glibc then gets errno 89 instead
of ENOSYS, does not fall back to clone, and no thread can start), and the s390 clone rule
(namespace flags in the second argument) lets clone with namespace flags through whenever the
stack argument is zero.

:func:`for_architecture` keeps only the rules that apply on one architecture, without
conditions, and names the filter's architectures (``architectures``, from ``archMap``): a file
podman and containerd read alike. It is pure and deterministic.
"""

from __future__ import annotations

import copy
import platform
from typing import Any

from .seccomp import SeccompProfileInvalid

#: ``uname -m`` -> the Go architecture name the engines' profiles use.
MACHINE_TO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
                   "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
#: Go architecture name -> libseccomp's native architecture in ``archMap``.
ARCH_TO_SCMP = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
                "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}
#: Condition keys of the engines' format that an OCI runtime ignores.
_CONDITIONS = ("includes", "excludes")


def node_architecture(machine: str | None = None) -> str:
    """This machine's architecture in the profiles' naming (``amd64`` on x86_64)."""
    name = machine or platform.machine()
    if name not in MACHINE_TO_ARCH:
        raise SeccompProfileInvalid(f"no seccomp architecture known for machine {name!r}; "
                                    f"known: {', '.join(sorted(MACHINE_TO_ARCH))}")
    return MACHINE_TO_ARCH[name]


def _applies(rule: dict[str, Any], arch: str) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    unknown = (set(includes) | set(excludes)) - {"arches"}
    if unknown:
        # caps / minKernel conditions cannot be decided from the architecture alone.
        raise SeccompProfileInvalid(f"rule for {rule.get('names')} has conditions {sorted(unknown)} "
                                    "that cannot be resolved for an OCI runtime")
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])


def for_architecture(profile: dict[str, Any], *, arch: str) -> dict[str, Any]:
    """The rules of ``profile`` that apply on ``arch``, unconditional, with ``architectures``."""
    if arch not in ARCH_TO_SCMP:
        raise SeccompProfileInvalid(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCH_TO_SCMP))}")
    if not isinstance(profile.get("syscalls"), list):
        raise SeccompProfileInvalid("profile has no 'syscalls' list")
    resolved = {k: copy.deepcopy(v) for k, v in profile.items() if k not in ("syscalls", "archMap", "architectures")}
    native = ARCH_TO_SCMP[arch]
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            resolved["architectures"] = [native, *entry.get("subArchitectures", [])]
            break
    else:
        # Already resolved (idempotent), or no map: the native architecture alone.
        stated = profile.get("architectures") or []
        resolved["architectures"] = list(stated) if native in stated else [native]
    rules = []
    for rule in profile["syscalls"]:
        if _applies(rule, arch):
            rules.append({k: copy.deepcopy(v) for k, v in rule.items() if k not in _CONDITIONS})
    resolved["syscalls"] = rules
    return resolved
