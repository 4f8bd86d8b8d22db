"""A signed bundle's manifest names the roots it fills, found by OPA itself (``opa inspect``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jovial_guard.policy.bundles import BundleError, bundle_roots
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR


def test_roots_are_the_top_level_packages_and_data_keys(tmp_path: Path) -> None:
    assert bundle_roots(DEFAULT_POLICY_DIR) == ["jovial_guard", "settings"]
    (tmp_path / "p.rego").write_text("package site.rules\n\nallow := true\n")
    (tmp_path / "data.json").write_text(json.dumps({"settings": {}, "extra": 1}))
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "data.json").write_text("{}")
    assert bundle_roots(tmp_path) == ["extra", "groups", "settings", "site"]


def test_top_level_data_that_is_no_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("[1, 2]")
    with pytest.raises(BundleError):
        bundle_roots(tmp_path)
