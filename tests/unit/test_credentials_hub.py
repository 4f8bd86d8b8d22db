"""StorageCredentials (the hub side): attach, renew on tick, detach; real mounts in tmp."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from jovial_guard.credentials import errors
from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.hub import StorageCredentials

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")


class Clock:
    now = 1_764_230_400

    def __call__(self) -> float:
        return float(self.now)


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[tuple[StorageCredentials, Clock]]:
    sc = StorageCredentials(
        state_dir=str(tmp_path / "state"),
        key_dir=str(tmp_path / "keys"),
        agent_key_path=str(tmp_path / "agent" / "agent.key"),
        storage_root=str(tmp_path / "lustre"),
        staging_root=str(tmp_path / "staging"),
        work_root=str(tmp_path / "work"),
        lifetime=3600,
    )
    clock = Clock()
    sc.issuer.clock = clock
    sc.agent.clock = clock
    try:
        yield sc, clock
    finally:
        sc.agent.backend.teardown()
        assert not any(str(tmp_path) in point for point, _ in mounts.mountinfo())


def test_defaults_keep_staging_out_of_state_dir() -> None:
    sc = StorageCredentials(state_dir="/var/lib/x")
    assert sc.staging_root.startswith("/run/jovial-guard/storage/") and "/var/lib/x" not in sc.staging_root
    assert sc.lifetime == 8 * 3600
    with pytest.raises(Exception, match="at least 60 seconds"):
        StorageCredentials(lifetime=5)


async def test_planned_storage_is_the_mounted_one_and_detach_revokes(
    creds: tuple[StorageCredentials, Clock], tmp_path: Path
) -> None:
    sc, _ = creds
    spawner = SimpleNamespace(user=SimpleNamespace(name="alice"))
    spec = SimpleNamespace(
        uid=1000, gid=100, storage=SimpleNamespace(fileset="home/alice", mode="rw", mount_path="/lustre/home")
    )
    plan = sc.plan_for_spawn(user="alice", spec=spec)
    assert plan is not None
    assert plan.volume == {str(tmp_path / "staging" / "alice"): {
        "bind": "/lustre",
        "mode": "ro",
        "propagation": "rslave",
    }}
    assert not (tmp_path / "staging" / "alice" / "home").exists(), "planning mounts nothing"
    record = await sc.attach_planned(plan)
    assert set(record) == {"serial", "fileset", "mode", "mount_path", "expires"}
    assert mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    await sc.detach_for_spawn(spawner)
    assert not mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    with pytest.raises(errors.GrantRevoked, match="server stopped"):
        sc.issuer.check(sc.issuer.load(record["serial"]), now=Clock.now)
    await sc.close()


def test_no_storage_in_decision_means_no_plan(creds: tuple[StorageCredentials, Clock]) -> None:
    sc, _ = creds
    assert sc.plan_for_spawn(user="alice", spec=SimpleNamespace(uid=1000, gid=100, storage=None)) is None


def test_unsafe_user_name_has_no_storage_plan(creds: tuple[StorageCredentials, Clock]) -> None:
    sc, _ = creds
    spec = SimpleNamespace(uid=1000, gid=100, storage=SimpleNamespace(fileset="x", mode="rw", mount_path="/lustre/x"))
    with pytest.raises(errors.MountError, match="safe path component"):
        sc.plan_for_spawn(user="../alice", spec=spec)


def test_respawn_replaces_previous_grant(creds: tuple[StorageCredentials, Clock]) -> None:
    sc, _ = creds
    first, _ = sc.attach_sync(
        user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw", mount_path="/lustre/home"
    )
    second, _ = sc.attach_sync(
        user="alice", uid=1000, gid=100, fileset="home/alice", mode="ro", mount_path="/lustre/home"
    )
    assert sc.issuer.live_serials(user="alice") == [second.serial]
    assert sc.issuer.revocations.get(first.serial) is not None
    assert sc.agent.holding("alice") == second


def test_tick_renews_live_grants_and_sweeps_expired(creds: tuple[StorageCredentials, Clock], tmp_path: Path) -> None:
    sc, clock = creds
    grant, _ = sc.attach_sync(
        user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw", mount_path="/lustre/home"
    )
    clock.now += 1000
    sc.tick()  # less than half the life used: nothing to do
    assert sc.agent.holding("alice") == grant
    clock.now += 1000
    sc.tick()  # past half: renewed, same serial, later expiry, still mounted
    renewed = sc.agent.holding("alice")
    assert renewed is not None and renewed.serial == grant.serial and renewed.expires == clock.now + 3600
    assert mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    sc.issuer.revoke(user="alice", reason="admin request")
    assert not mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    sc.tick()  # a revoked grant is not renewed
    assert sc.agent.holding("alice") is None
