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
    assert installed.read_bytes() == notebook_profile_path().read_bytes()
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
