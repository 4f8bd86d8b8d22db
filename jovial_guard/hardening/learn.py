"""Learned seccomp profiles: from "what the engine allows" to "what notebooks call".

Three pure steps, each testable against literal dicts:

* :func:`logging_profile` turns the current notebook profile into a recording one: every
  rule that allows now logs (``SCMP_ACT_LOG``: the call still runs, the kernel writes an
  audit record), every refusal stays a refusal, argument filters stay as they are.
* :func:`build_learned_profile` keeps, from the current profile, only the allow rules for
  syscalls a recording saw (argument-filtered rules such as clone's namespace mask and the
  personality values are kept as rules, not widened), keeps every refusal rule (clone3 must
  still answer ENOSYS so libc falls back to the filtered clone), and refuses everything
  else with EPERM.
* :func:`profile_stats` and :func:`render_review` describe profiles side by side, so a
  reviewer sees the counts and exactly which syscalls a learned profile gives up.

The recording is data (``profiles/seccomp/recordings/``) with the command that made it; the
learned profile is regenerated from it and checked for drift like the notebook profile.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import MalformedInput
from .seccomp import REPO_ROOT, render

RECORDING_VERSION = 1
ALLOW = "SCMP_ACT_ALLOW"
LOG = "SCMP_ACT_LOG"
EPERM = 1
#: Allowed whether or not a recording saw them. The kernel's own signal-return and
#: syscall-restart paths and process exit, which a recording catches only by timing (a
#: signal landing in a blocking call) and whose refusal corrupts or hangs a process; and
#: the calls the vDSO answers in user space, which become real syscalls on a host whose
#: clock source has no vDSO support (a recording here never sees them, a refusal there
#: breaks every clock read).
BASELINE = ("exit", "exit_group", "restart_syscall", "rt_sigreturn",
            "clock_gettime", "clock_getres", "gettimeofday", "time", "getcpu")
#: How rule "arches" name the machine the recording ran on (archMap names differ).
NATIVE_ARCH = "amd64"
#: The only architecture a learned profile admits: what was recorded. Its 32-bit and x32
#: sub-architectures are left out (a recording says nothing about them, and libseccomp
#: cannot even compile argument-filtered socket rules for i386, which multiplexes socket
#: calls through socketcall); calls from any other ABI are refused as a bad architecture.
SCMP_NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64"}


class LearnError(MalformedInput):
    """A recording or profile cannot be used to learn from (named in the message)."""


def learned_profile_path() -> Path:
    return REPO_ROOT / "profiles" / "seccomp" / "notebook-learned.json"


def recording_path() -> Path:
    return REPO_ROOT / "profiles" / "seccomp" / "recordings" / "notebook.json"


def review_path() -> Path:
    return REPO_ROOT / "profiles" / "seccomp" / "notebook-learned.diff"


def digest(profile: dict[str, Any]) -> str:
    """sha256 of a profile's canonical JSON (what a recording names as its source)."""
    return hashlib.sha256(render(profile).encode()).hexdigest()


def logging_profile(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` with every allow rule turned into a log rule (pure)."""
    if current.get("defaultAction") in (None, ALLOW, LOG):
        raise LearnError("the current profile does not refuse by default; nothing to learn from")
    out = copy.deepcopy(current)
    for rule in out.get("syscalls", []):
        if rule.get("action") == ALLOW:
            rule["action"] = LOG
    return out


def _applies(rule: dict[str, Any], arch: str) -> bool:
    """Does ``rule`` apply on ``arch`` for a process without capabilities?"""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("caps"):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    return arch not in (excludes.get("arches") or [])


def allowed_names(profile: dict[str, Any], *, arch: str = NATIVE_ARCH,
                  action: str = ALLOW) -> dict[str, bool]:
    """Syscall name -> "allowed only for some arguments", for a capability-less ``arch``."""
    names: dict[str, bool] = {}
    for rule in profile.get("syscalls", []):
        if rule.get("action") != action or not _applies(rule, arch):
            continue
        filtered = bool(rule.get("args"))
        for name in rule["names"]:
            names[name] = names.get(name, True) and filtered
    return names


def build_learned_profile(current: dict[str, Any], recording: dict[str, Any], *,
                          baseline: tuple[str, ...] = BASELINE) -> dict[str, Any]:
    """An allowlist of what ``recording`` saw, cut from ``current`` (pure, deterministic)."""
    check_recording(recording)
    if recording["profile_sha256"] != digest(current):
        raise LearnError(
            "the recording was made against another notebook profile "
            f"(sha256 {recording['profile_sha256'][:16]}, current {digest(current)[:16]}); "
            "record again: jovial-guard profile record"
        )
    used = set(recording["syscalls"]) | set(baseline)
    stray = sorted(set(recording["syscalls"]) - set(allowed_names(current)))
    if stray:
        raise LearnError(f"the recording names syscalls the current profile refuses: {stray}")
    machine = recording.get("machine", "x86_64")
    if machine not in SCMP_NATIVE_ARCH:
        raise LearnError(f"recordings from {machine!r} are not supported (x86_64 only)")
    rules: list[dict[str, Any]] = []
    for original in current.get("syscalls", []):
        rule = copy.deepcopy(original)
        arches = (rule.get("includes") or {}).get("arches")
        if arches and NATIVE_ARCH not in arches:
            continue  # another architecture's rule; the learned profile admits only one
        if rule.get("action") == ALLOW:
            rule["names"] = [name for name in rule["names"] if name in used]
            if not rule["names"]:
                continue
        rules.append(rule)
    rules[0]["comment"] = (
        f"jovial_guard notebook-learned: {len(recording['syscalls'])} syscalls recorded by "
        f"{', '.join(sorted(recording['workloads']))} (recording sha256:"
        f"{hashlib.sha256(render(recording).encode()).hexdigest()[:16]}); everything else "
        f"EPERM; {machine} only; valid only with no-new-privileges (without it the runtime "
        "installs the filter before it drops privileges). " + str(rules[0].get("comment") or "")
    )
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "defaultErrno": "EPERM",
        "archMap": [{"architecture": SCMP_NATIVE_ARCH[machine], "subArchitectures": []}],
        "syscalls": rules,
    }


def check_recording(recording: Any) -> None:
    """Refuse a recording that is not version 1, lacks a field, or recorded a failure."""
    if not isinstance(recording, dict) or recording.get("version") != RECORDING_VERSION:
        raise LearnError(f"not a version-{RECORDING_VERSION} recording")
    for field in ("command", "profile_sha256", "workloads", "syscalls", "lost"):
        if field not in recording:
            raise LearnError(f"recording has no {field!r}")
    if recording["lost"]:
        raise LearnError(f"the recording lost {recording['lost']} audit records; record again")
    if recording.get("pids_outside_container_namespace"):
        raise LearnError("the recording holds records of processes outside the containers")
    failed = sorted(name for name, run in recording["workloads"].items() if not run.get("ok"))
    if failed:
        raise LearnError(f"workloads failed while recording: {failed}; fix them and record again")
    if not recording["syscalls"] or recording["syscalls"] != sorted(set(recording["syscalls"])):
        raise LearnError("recording 'syscalls' must be a sorted, non-empty list of names")


def profile_stats(profile: dict[str, Any], *, arch: str = NATIVE_ARCH,
                  native: frozenset[str] | None = None) -> dict[str, Any]:
    """Counts a reviewer compares: what is allowed, conditionally, and refused on purpose.

    ``native``: the names that are real syscalls on ``arch`` (profiles list other
    architectures' names too, which the compiler ignores there); None counts every name.
    """
    def real(names: Any) -> set[str]:
        return {n for n in names if native is None or n in native}

    allowed = {n: f for n, f in allowed_names(profile, arch=arch).items()
               if native is None or n in native}
    every_rule = {n for r in profile.get("syscalls", []) if r.get("action") == ALLOW
                  for n in r["names"]}
    refused = real(n for r in profile.get("syscalls", []) if r.get("action") == "SCMP_ACT_ERRNO"
                   and _applies(r, arch) for n in r["names"])
    return {
        "default": f"{profile.get('defaultAction')}({profile.get('defaultErrno', '')})",
        "allowed": len(allowed),
        "argument_filtered": sum(1 for only_some in allowed.values() if only_some),
        "allow_names_any_arch_or_caps": len(every_rule),
        "refused_by_rule": len(refused - set(allowed)),
    }


def stats_table(profiles: dict[str, dict[str, Any]], *,
                native: frozenset[str] | None = None) -> str:
    """Side-by-side counts (``allowed``: syscalls a capability-less x86_64 process may call)."""
    rows = {name: profile_stats(profile, native=native) for name, profile in profiles.items()}
    head = ("profile", "default action", "allowed", "of which arg-filtered",
            "allow names (any arch/caps)", "refused by rule")
    keys = ("default", "allowed", "argument_filtered", "allow_names_any_arch_or_caps",
            "refused_by_rule")
    table = [head] + [(name,) + tuple(str(row[k]) for k in keys) for name, row in rows.items()]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in table) + "\n"


def _wrap(names: list[str], width: int = 88) -> list[str]:
    lines, line = [], "   "
    for name in names:
        if len(line) + len(name) + 1 > width:
            lines.append(line)
            line = "   "
        line += " " + name
    return lines + [line] if line.strip() else lines


def render_review(current: dict[str, Any], learned: dict[str, Any],
                  recording: dict[str, Any], *, engine_default: dict[str, Any] | None = None,
                  baseline: tuple[str, ...] = BASELINE,
                  native: frozenset[str] | None = None) -> str:
    """A reviewable account of what the learned profile changes (plain text)."""
    def real(names: dict[str, bool]) -> dict[str, bool]:
        return {n: f for n, f in names.items() if native is None or n in native}

    before, after = real(allowed_names(current)), real(allowed_names(learned))
    removed = sorted(set(before) - set(after))
    users: dict[str, list[str]] = {}
    for workload, run in sorted(recording["workloads"].items()):
        for name in run["syscalls"]:
            users.setdefault(name, []).append(workload)
    out = [f"# {learned_profile_path().name} against {Path(recording['profile']).name}",
           f"# recorded by: {recording['command']}",
           f"# image {recording.get('image')} (recipe {recording.get('image_recipe')}), "
           f"kernel {recording.get('kernel')}", "",
           "## syscall counts (x86_64 syscalls, no capabilities; names of other "
           "architectures left out)" if native is not None else
           "## syscall counts (names, no capabilities)", ""]
    table = {"engine default": engine_default} if engine_default else {}
    table.update({"notebook": current, "notebook-learned": learned})
    out += ["    " + line for line in stats_table(table, native=native).splitlines()] + [""]
    out += [f"## no longer allowed ({len(removed)}): EPERM in the learned profile"]
    out += _wrap(removed) + [""]
    kept = sorted(after)
    out += [f"## still allowed ({len(kept)}), with the workloads that called each"]
    out += [f"    {name:<24} {', '.join(users.get(name, [])) or '(baseline, not recorded)'}"
            + ("  [argument-filtered]" if after[name] else "") for name in kept]
    out += ["", f"## allowed without a recording (baseline): {', '.join(baseline)}", "",
            "## rule-by-rule diff", ""]
    out += list(difflib.unified_diff(render(current).splitlines(),
                                     render(learned).splitlines(),
                                     "notebook.json", "notebook-learned.json", lineterm="", n=1))
    return "\n".join(out) + "\n"


def load_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LearnError(f"{what} {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise LearnError(f"{what} {path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise LearnError(f"{what} {path} is not a JSON object")
    return doc


def chosen_by(settings: dict[str, Any]) -> dict[str, list[str]]:
    """Which notebook profiles run under which seccomp profile, from the policy's settings.

    A notebook profile without its own ``seccomp`` gets ``seccomp.notebook_default``; every
    installed profile is listed, chosen or not.
    """
    default = str((settings.get("seccomp") or {}).get("notebook_default", ""))
    out: dict[str, list[str]] = {str(n): [] for n in (settings.get("seccomp") or {}).get("localhost_profiles", [])}
    for name, profile in sorted((settings.get("profiles") or {}).items()):
        choice = profile.get("seccomp", default) if isinstance(profile, dict) else default
        out.setdefault(str(choice), []).append(str(name))
    return out
