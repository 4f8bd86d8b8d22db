"""The notebook profile resolved for one architecture, as containerd's CRI reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jovial_guard.hardening.seccomp import SeccompProfileInvalid, render, validate_profile_file
from jovial_guard.hardening.seccomp_oci import for_architecture, node_architecture

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = json.loads((REPO / "profiles" / "seccomp" / "notebook.json").read_text())


def rules_for(profile: dict, name: str) -> list[dict]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_amd64_keeps_one_clone3_rule_answering_enosys_and_clone_filtered_on_its_first_argument() -> None:
    resolved = for_architecture(NOTEBOOK, arch="amd64")
    (clone3,) = rules_for(resolved, "clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    (clone,) = rules_for(resolved, "clone")
    assert [a["index"] for a in clone["args"]] == [0]
    assert resolved["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert not any("includes" in r or "excludes" in r for r in resolved["syscalls"])
    assert rules_for(resolved, "arch_prctl") and not rules_for(resolved, "s390_runtime_instr")


def test_s390x_keeps_the_second_argument_clone_rule_and_arm64_its_own_calls() -> None:
    (clone,) = rules_for(for_architecture(NOTEBOOK, arch="s390x"), "clone")
    assert [a["index"] for a in clone["args"]] == [1]
    arm = for_architecture(NOTEBOOK, arch="arm64")
    assert rules_for(arm, "set_tls") and not rules_for(arm, "arch_prctl")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_denials_and_default_survive_and_the_result_still_validates(tmp_path: Path) -> None:
    resolved = for_architecture(NOTEBOOK, arch="amd64")
    assert (resolved["defaultAction"], resolved["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    (unshare,) = rules_for(resolved, "unshare")
    assert (unshare["action"], unshare["errnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    path = tmp_path / "notebook.json"
    path.write_text(render(resolved))
    assert validate_profile_file(path) == path
    assert for_architecture(NOTEBOOK, arch="amd64") == resolved  # deterministic
    assert for_architecture(resolved, arch="amd64") == resolved  # idempotent


def test_unresolvable_input_is_refused_by_name() -> None:
    with pytest.raises(SeccompProfileInvalid, match="unknown architecture 'mips64'"):
        for_architecture(NOTEBOOK, arch="mips64")
    with pytest.raises(SeccompProfileInvalid, match="minKernel"):
        for_architecture({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}}]}, arch="amd64")
    with pytest.raises(SeccompProfileInvalid, match="no 'syscalls' list"):
        for_architecture({}, arch="amd64")
    with pytest.raises(SeccompProfileInvalid, match="sparc"):
        node_architecture("sparc")
    assert node_architecture("x86_64") == "amd64"
