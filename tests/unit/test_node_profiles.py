"""The node agent's profile installation: validated sources, atomic writes, drift detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jovial_guard.hardening.seccomp import SeccompProfileInvalid, notebook_profile_path
from jovial_guard.node import profiles as prof


def test_committed_profiles_load_and_install_under_the_kubelet_root(tmp_path: Path) -> None:
    profiles = prof.load_profiles(prof.default_source_dir())
    assert "notebook.json" in profiles
    assert prof.drift(profiles, tmp_path) == sorted(profiles)
    assert prof.install(profiles, tmp_path) == sorted(profiles)
    installed = tmp_path / "seccomp" / "jovial-guard" / "notebook.json"
    assert installed.read_bytes() == profiles["notebook.json"]
    assert installed.stat().st_mode & 0o777 == 0o644
    # Nothing to do the second time; no temporary files are left beside the profile.
    assert prof.install(profiles, tmp_path) == [] and prof.drift(profiles, tmp_path) == []
    assert sorted(p.name for p in installed.parent.iterdir()) == sorted(profiles)


def test_a_changed_or_missing_profile_is_drift_and_is_rewritten(tmp_path: Path) -> None:
    profiles = prof.load_profiles(prof.default_source_dir())
    prof.install(profiles, tmp_path)
    installed = tmp_path / "seccomp" / "jovial-guard" / "notebook.json"
    installed.write_text("{}")
    assert prof.drift(profiles, tmp_path) == ["notebook.json"]
    installed.unlink()
    assert prof.drift(profiles, tmp_path) == ["notebook.json"]
    assert prof.install(profiles, tmp_path) == ["notebook.json"]
    assert installed.read_bytes() == profiles["notebook.json"]


def test_installed_profiles_hold_only_this_architectures_rules(tmp_path: Path) -> None:
    """containerd applies every rule of a Localhost profile: the installed file must carry no
    per-architecture conditions, and the s390 clone rule (flags in the second argument) and
    the other architectures' clone3 answers must not reach an x86_64 node."""
    committed = json.loads(notebook_profile_path().read_text())
    assert any("includes" in r or "excludes" in r for r in committed["syscalls"])
    resolved = prof.load_profiles(prof.default_source_dir(), arch="amd64")
    installed = json.loads(resolved["notebook.json"])
    assert not any(r.get("includes") or r.get("excludes") for r in installed["syscalls"])
    clone3 = [r for r in installed["syscalls"] if "clone3" in r["names"]]
    assert [r.get("errnoRet") for r in clone3] == [38]
    clone_args = [a for r in installed["syscalls"] if "clone" in r["names"] for a in r.get("args") or []]
    assert clone_args and all(a["index"] == 0 for a in clone_args)
    # Resolving what is already resolved changes nothing (a --profiles-dir of resolved files).
    for name, data in resolved.items():
        (tmp_path / name).write_bytes(data)
    assert prof.load_profiles(tmp_path, arch="amd64") == resolved


def test_digest_covers_names_and_contents() -> None:
    base = {"a.json": b"1", "b.json": b"2"}
    assert prof.digest(base) == prof.digest(dict(reversed(list(base.items()))))
    assert prof.digest(base) != prof.digest({"a.json": b"1", "b.json": b"3"})
    assert prof.digest(base) != prof.digest({"a.json": b"1", "c.json": b"2"})


def test_weak_or_absent_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SeccompProfileInvalid, match="no seccomp profiles"):
        prof.load_profiles(tmp_path)
    (tmp_path / "weak.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "unshare"], "action": "SCMP_ACT_ALLOW"}]}))
    with pytest.raises(SeccompProfileInvalid, match="unshare"):
        prof.load_profiles(tmp_path)


def test_install_into_an_unwritable_place_fails_clearly(tmp_path: Path) -> None:
    profiles = prof.load_profiles(prof.default_source_dir())
    (tmp_path / "seccomp").mkdir()
    (tmp_path / "seccomp" / "jovial-guard").write_text("a file where the directory should be")
    with pytest.raises(prof.ProfileInstallFailed, match="cannot install seccomp profiles"):
        prof.install(profiles, tmp_path)
