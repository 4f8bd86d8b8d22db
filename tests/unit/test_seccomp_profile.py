"""The notebook seccomp profile: generated from the engine default, committed, refused when bad."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jovial_guard.hardening import seccomp
from jovial_guard.hardening.seccomp import (
    DENIED,
    SeccompProfileInvalid,
    build_notebook_profile,
    load_base,
    notebook_profile_path,
    render,
    validate_profile_file,
)


def test_committed_profile_equals_generated() -> None:
    expected = render(build_notebook_profile(load_base()))
    assert notebook_profile_path().read_text() == expected, (
        "profiles/seccomp/notebook.json drifted: python -m jovial_guard.hardening.seccomp --write"
    )
    assert seccomp.main(["--check"]) == 0


def test_generation_is_deterministic() -> None:
    base = load_base()
    assert render(build_notebook_profile(base)) == render(build_notebook_profile(json.loads(json.dumps(base))))


def _allowed_unconditionally(profile: dict) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule["args"] and not rule["includes"]
        for name in rule["names"]
    }


def test_base_allows_what_the_notebook_profile_denies() -> None:
    """The tightening is real: these are allowed by the engine default, denied by ours."""
    base = load_base()
    ours = build_notebook_profile(base)
    newly_denied = {"unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "ptrace",
                    "clone3", "process_vm_readv"}
    assert newly_denied <= _allowed_unconditionally(base)
    assert not newly_denied & _allowed_unconditionally(ours)
    for name in ("keyctl", "add_key", "request_key", "userfaultfd", "bpf", "perf_event_open",
                 "kexec_load", "init_module", "finit_module", "delete_module", "unshare", "setns"):
        assert name in DENIED
        rules = [r for r in ours["syscalls"] if name in r["names"]]
        assert rules and all(r["action"] == "SCMP_ACT_ERRNO" and r["errnoRet"] == 1 for r in rules), name


def test_clone_only_without_namespace_flags() -> None:
    ours = build_notebook_profile(load_base())
    clone = [r for r in ours["syscalls"] if "clone" in r["names"]]
    assert clone and all(r["action"] == "SCMP_ACT_ALLOW" and r["args"] for r in clone)
    x86 = [r for r in clone if not r["includes"]][0]
    assert x86["args"] == [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0x7E020000, "valueTwo": 0}]
    # CLONE_NEWUSER is inside the mask.
    assert 0x10000000 & x86["args"][0]["value"]


def test_no_capability_conditional_rules_survive() -> None:
    ours = build_notebook_profile(load_base())
    for rule in ours["syscalls"]:
        assert "caps" not in rule["includes"] and "caps" not in rule["excludes"]
    assert ours["defaultAction"] == "SCMP_ACT_ERRNO"


def test_base_that_allows_by_default_is_refused() -> None:
    with pytest.raises(SeccompProfileInvalid, match="does not deny by default"):
        build_notebook_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})


def test_committed_profile_validates() -> None:
    assert validate_profile_file(notebook_profile_path()) == notebook_profile_path()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"defaultAction": "SCMP_ACT_ERRNO"}', "no 'syscalls' list"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}', "does not deny by default"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "keyctl"], '
         '"action": "SCMP_ACT_ALLOW"}]}', "allows keyctl"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": ["read"]}', "malformed rule"),
    ],
)
def test_bad_profile_files_are_refused(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SeccompProfileInvalid, match=match):
        validate_profile_file(path)


def test_missing_base_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SeccompProfileInvalid, match="golang-github-containers-common"):
        load_base(tmp_path / "nope.json")
