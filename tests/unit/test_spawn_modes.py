"""The pre-spawn hook honours the enforcement modes of the policy data (real OPA)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa
from jovial_guard.spawn.guard import SpawnRefused

from .test_spawn_hook import _guard, _spawner


def opa_with_modes(tmp: Path, modes: dict[str, str]) -> ManagedOpa:
    root = tmp / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, root)
    data = json.loads((root / "data.json").read_text())
    data["settings"]["enforcement"]["modes"] = modes
    (root / "data.json").write_text(json.dumps(data))
    return ManagedOpa(root)


@pytest.fixture(params=["warn", "audit"])
def moded_opa(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ManagedOpa]]:
    with opa_with_modes(tmp_path, {"profiles/not-allowed": request.param}) as opa:
        yield request.param, opa


async def test_warn_and_audit_admit_and_record(moded_opa: tuple[str, ManagedOpa], caplog: pytest.LogCaptureFixture) -> None:
    mode, opa = moded_opa
    guard = _guard(opa.url)
    spawner = _spawner("bob", ("astro",), "large-memory")  # not allowed for astro: enforce would refuse
    with caplog.at_level(logging.WARNING, logger="test-spawner"):
        record = await guard.pre_spawn(spawner)
    await guard.close()
    assert spawner.guard_hardened is True and record["mode"] == mode
    assert any("[profiles/not-allowed]" in m and f"{mode} mode" in m for m in caplog.messages)
    shown = [w for w in record["warnings"] if w.startswith("[profiles/not-allowed]")]
    assert bool(shown) is (mode == "warn")  # warn shows it; audit only records it


async def test_enforce_in_data_still_refuses(tmp_path: Path) -> None:
    with opa_with_modes(tmp_path, {"profiles/*": "warn", "profiles/not-allowed": "enforce"}) as opa:
        guard = _guard(opa.url)
        with pytest.raises(SpawnRefused) as caught:
            await guard.pre_spawn(_spawner("bob", ("astro",), "large-memory"))
        await guard.close()
    assert caught.value.rule == "profiles/not-allowed"
