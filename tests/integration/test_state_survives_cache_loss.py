"""Deleting the cache costs at most a rebuild: never a key, a grant or a log record.

The embedded stack runs with its own cache and state directories, spawns a server (a storage
grant, decisions, audit records), gets one more grant from the admins' CLI, and is stopped.
Then the whole cache directory is deleted and the stack started again on the same state:
every grant still opens with the keys in the state directory, the live one still verifies,
the audit log verifies with its signed checkpoints, and the policy history is unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jovial_guard.credentials.issuer import Issuer
from jovial_guard.policy.store import PolicyStore
from jovial_guard.runtime.image import recipe_key, tarball_path
from jovial_guard.runtime.runc import runc_dir, runc_path
from jovial_guard.spawn.stack import EmbeddedStack, StackSettings

from .conftest import EGRESS_POOL, NAME_PREFIX, NETNS_PREFIX


def _settings(state: Path) -> StackSettings:
    second = int(EGRESS_POOL.split(".")[1])
    return StackSettings.ephemeral(
        state / "hub", engine_root=state / "engine" / "root", engine_socket=state / "podman.sock",
        netns_prefix=NETNS_PREFIX + "c", egress_pool=f"10.{second + 2 if second < 237 else second - 2}.0.0/16",
        supervise=False, hub_ready_timeout=120,
        extra_env={"JOVIAL_GUARD_NAME_PREFIX": NAME_PREFIX + "c",
                   "JOVIAL_GUARD_HOME_VOLUME": NAME_PREFIX + "c-home-{username}"},
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jovial_guard.cli", *args],
                          capture_output=True, text=True, check=False, timeout=120)


def _spawn(stack: EmbeddedStack, username: str) -> None:
    import requests

    headers = {"Authorization": f"token {stack.settings.api_token}"}
    api = stack.settings.url + "/hub/api"
    requests.post(f"{api}/users/{username}", headers=headers, timeout=30)
    resp = requests.post(f"{api}/users/{username}/server", json={"profile": "default"},
                         headers=headers, timeout=120)
    assert resp.status_code in (201, 202), resp.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        server = requests.get(f"{api}/users/{username}", headers=headers, timeout=30).json()["servers"].get("")
        if server and server.get("ready"):
            return
        time.sleep(0.5)
    pytest.fail(f"{username}'s server not ready")


def test_cache_deleted_between_runs_loses_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  unmount_below: None) -> None:
    real_tarball = tarball_path(recipe_key())
    assert real_tarball.is_file(), "the notebook image tarball is built by scripts/setup.d"
    real_runc = runc_path()
    cache, state = tmp_path / "cache", tmp_path / "state"
    (cache / "images").mkdir(parents=True)
    (cache / "images" / real_tarball.name).symlink_to(real_tarball)
    monkeypatch.setenv("JOVIAL_GUARD_CACHE", str(cache))

    def rebuild_runc() -> None:
        """What set-up (scripts/setup.d/15-runc.sh) puts back into an emptied cache."""
        runc_dir().mkdir(parents=True, exist_ok=True)
        (runc_dir() / "runc").symlink_to(real_runc)

    rebuild_runc()
    monkeypatch.setenv("JOVIAL_GUARD_STATE_DIR", str(state))
    monkeypatch.delenv("JOVIAL_GUARD_HUB_STATE_DIR", raising=False)
    hub = state / "hub"
    creds = ["creds", "--state-dir", str(hub / "credentials"), "--key-dir", str(hub / "credentials-keys")]

    stack = EmbeddedStack(_settings(state), progress=lambda m: None).start()
    try:
        _spawn(stack, "gia")
        issued = _cli(*creds, "issue", "--user", "hal", "--uid", "1000", "--gid", "100",
                      "--fileset", "home/hal", "--mode", "rw", "--mount-path", "/lustre/home")
        assert issued.returncode == 0, issued.stderr
        live_serial = issued.stdout.split("serial:")[1].split()[0]
    finally:
        stack.stop()

    issuer = Issuer.from_directory(hub / "credentials", keyring_path=hub / "credentials-keys" / "kek.json")
    grants_before = {serial: issuer.load(serial) for serial, _, _ in issuer.list_grants()}
    assert len(grants_before) >= 2  # gia's (revoked at stop) and hal's
    history_before = [e.hash for e in PolicyStore(hub / "policy-store").history()]
    assert history_before

    shutil.rmtree(cache)
    assert not cache.exists()
    # The engine's runtime is rebuilt by set-up like any tool; the image is not needed again:
    # the engine storage (state) still holds it.
    rebuild_runc()

    stack = EmbeddedStack(_settings(state), progress=lambda m: None).start()
    try:
        _spawn(stack, "gia")
    finally:
        stack.stop()

    issuer = Issuer.from_directory(hub / "credentials", keyring_path=hub / "credentials-keys" / "kek.json")
    for serial, grant in grants_before.items():
        assert issuer.load(serial) == grant
    verified = _cli(*creds, "verify", live_serial, "--user", "hal")
    assert verified.returncode == 0 and verified.stdout.startswith("valid:"), verified.stdout + verified.stderr
    audit = _cli("audit", "verify", "--dir", str(hub / "audit"), "--require-signed")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert " 0 signed checkpoint" not in audit.stdout, audit.stdout
    history_after = [e.hash for e in PolicyStore(hub / "policy-store").history()]
    assert history_after[: len(history_before)] == history_before
    assert not os.path.exists(cache / "hub")
