"""cut_network's target checks: only per-user namespaces, never the host's or the router's."""

from __future__ import annotations

from pathlib import Path

import pytest

from jovial_guard.audit.netcut import DROP_ALL, NetworkCutFailed, NftNetworkCutter
from jovial_guard.audit.registry import Owner, SpawnRegistry
from jovial_guard.audit.responses import ActionSkipped
from jovial_guard.spawn.network import namespace_key


@pytest.fixture
def cutter(tmp_path: Path) -> NftNetworkCutter:
    return NftNetworkCutter(SpawnRegistry(tmp_path / "spawns.sqlite"))


@pytest.mark.parametrize("netns", ["jg-egress", "jg-hub", "jg-s-storage", "../../proc/1/ns/net", "Jg-u-x", ""])
def test_only_user_namespaces_are_targets(cutter: NftNetworkCutter, netns: str) -> None:
    owner = Owner(user="alice", server="", container_id="ab" * 32, netns=netns or None)
    with pytest.raises((NetworkCutFailed, ActionSkipped)):
        cutter.argv_for(owner)


def test_missing_namespace_fails_clearly(cutter: NftNetworkCutter) -> None:
    with pytest.raises(NetworkCutFailed, match="does not exist"):
        cutter.argv_for(Owner(user="alice", server="", netns=f"jgzz-u-{namespace_key('alice')}"))


@pytest.mark.parametrize("user", ["alice", "alice@uni.edu", "Bob.Smith"])
def test_only_the_users_own_namespace_is_a_target(cutter: NftNetworkCutter, user: str) -> None:
    """The name comes from the spawn's naming function; another user's namespace is refused."""
    own = f"jgzz-u-{namespace_key(user)}"
    with pytest.raises(NetworkCutFailed, match="does not exist"):  # accepted as a target, then looked up
        cutter.argv_for(Owner(user=user, server="", netns=f"/run/netns/{own}"))
    other = f"jgzz-u-{namespace_key('mallory')}"
    with pytest.raises(NetworkCutFailed, match="per-user namespace; refusing"):
        cutter.argv_for(Owner(user=user, server="", netns=f"/run/netns/{other}"))


async def test_nothing_registered_is_skipped(cutter: NftNetworkCutter) -> None:
    with pytest.raises(ActionSkipped):
        await cutter.cut(user="alice", server=None)


def test_drop_all_ruleset_is_valid_nft() -> None:
    import shutil
    import subprocess

    nft = shutil.which("nft")
    if nft is None:
        pytest.fail("nft is not installed: run scripts/install-system.sh")
    # --check parses and validates without touching any ruleset.
    result = subprocess.run([nft, "--check", "-f", "-"], input=DROP_ALL, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
