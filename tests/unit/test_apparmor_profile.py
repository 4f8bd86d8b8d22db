"""The notebook AppArmor profile compiles; broken ones are rejected with the parser's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from jovial_guard.hardening.apparmor import (
    AppArmorProfileInvalid,
    host_supports_apparmor,
    notebook_profile_path,
    validate_profile,
)


def test_notebook_profile_compiles() -> None:
    assert validate_profile(notebook_profile_path()) == notebook_profile_path()


def test_profile_denies_the_dangerous_things() -> None:
    text = notebook_profile_path().read_text()
    for rule in ("deny capability,", "deny mount,", "deny ptrace,", "deny network raw,",
                 "deny pivot_root,", "deny /usr/** wlk,"):
        assert rule in text


def test_broken_profile_is_rejected_with_parser_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text(notebook_profile_path().read_text().replace("deny mount,", "deny mount, oops"))
    with pytest.raises(AppArmorProfileInvalid, match=r"does not compile: .*syntax error"):
        validate_profile(broken)


def test_unclosed_profile_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "unclosed"
    broken.write_text(notebook_profile_path().read_text().rstrip().rstrip("}"))
    with pytest.raises(AppArmorProfileInvalid, match="does not compile"):
        validate_profile(broken)


def test_missing_profile_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AppArmorProfileInvalid, match="does not exist"):
        validate_profile(tmp_path / "absent")


def test_host_support_is_read_from_the_kernel(tmp_path: Path) -> None:
    param = tmp_path / "enabled"
    assert not host_supports_apparmor(param).supported
    assert not host_supports_apparmor(param)
    param.write_text("N\n")
    assert "disabled" in host_supports_apparmor(param).reason
    param.write_text("Y\n")
    assert host_supports_apparmor(param).supported


def test_this_host_is_reported_honestly() -> None:
    real = Path("/sys/module/apparmor/parameters/enabled")
    expected = real.exists() and real.read_text().strip() == "Y"
    assert host_supports_apparmor().supported is expected


def test_loading_on_a_host_without_apparmor_is_refused_honestly() -> None:
    from jovial_guard.hardening.apparmor import AppArmorSupport, AppArmorUnsupported, load_profile

    with pytest.raises(AppArmorUnsupported, match="no AppArmor LSM"):
        load_profile(notebook_profile_path(),
                     support=AppArmorSupport(False, "the kernel has no AppArmor LSM"))
    if not host_supports_apparmor().supported:
        with pytest.raises(AppArmorUnsupported):
            load_profile(notebook_profile_path())


def test_loading_validates_first(tmp_path: Path) -> None:
    from jovial_guard.hardening.apparmor import AppArmorSupport, load_profile

    broken = tmp_path / "broken"
    broken.write_text("profile x {")
    with pytest.raises(AppArmorProfileInvalid):
        load_profile(broken, support=AppArmorSupport(True, "pretend supported: never reached"))
