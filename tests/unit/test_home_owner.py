"""When a home volume may start without its ownership walk, and when it may not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jovial_guard.hardening.home_owner import Block, HomeOwners, top_settled

BLOCK = Block(1_000_065_536, 65_536)
UID, GID, NOTEBOOK_GID = BLOCK.start + 1000, BLOCK.start + 1000, BLOCK.start + 100


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home as a walk left it (top and image files UID:GID), with a file the notebook
    wrote afterwards (its own group)."""
    if os.geteuid() != 0:
        pytest.fail("these tests chown files: run them as root (as the hub runs)")
    data = tmp_path / "vol" / "_data"
    (data / ".local" / "share").mkdir(parents=True)
    (data / "notes.ipynb").write_text("{}")
    os.symlink("/etc/passwd", data / "link")
    for path in (data, data / ".local", data / ".local" / "share"):
        os.chown(path, UID, GID)
    os.chown(data / "notes.ipynb", UID, NOTEBOOK_GID)
    os.lchown(data / "link", UID, GID)
    return data


def test_a_recorded_home_owned_at_its_top_needs_no_walk(home: Path, tmp_path: Path) -> None:
    owners = HomeOwners(tmp_path / "home-owners.json")
    assert not owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)  # no record
    assert owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    assert owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)
    # Deeper files are not looked at: only the walk or the user's own block could own them.
    os.chown(home / ".local" / "share", 1000, 1000)
    assert owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)


@pytest.mark.parametrize("change", ["top", "top-in-block", "entry", "symlink", "gid"])
def test_foreign_ownership_at_the_top_needs_the_walk(home: Path, tmp_path: Path, change: str) -> None:
    owners = HomeOwners(tmp_path / "home-owners.json")
    owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    if change == "top":
        os.chown(home, 1000, 1000)  # a home from before user namespaces
    elif change == "top-in-block":
        os.chown(home, UID + 1, GID)  # not the owner the walk gave it
    elif change == "entry":
        (home / "copied-in.txt").write_text("by an admin, as root")
    elif change == "symlink":
        os.lchown(home / "link", 0, 0)
    else:
        os.chown(home / "notes.ipynb", UID, 100)
    assert not owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)


def test_another_block_or_a_remade_volume_needs_the_walk(home: Path, tmp_path: Path) -> None:
    owners = HomeOwners(tmp_path / "home-owners.json")
    owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    assert not owners.settled(volume="h-alice", created="t2", path=home, block=BLOCK)
    assert not owners.settled(volume="h-alice", created="t1", path=home,
                              block=Block(BLOCK.start + BLOCK.size, BLOCK.size))
    assert not owners.settled(volume="h-bob", created="t1", path=home, block=BLOCK)
    owners.forget("h-alice")
    assert not owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)


def test_a_walk_that_left_foreign_ids_is_not_recorded(home: Path, tmp_path: Path) -> None:
    owners = HomeOwners(tmp_path / "home-owners.json")
    owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    os.chown(home, 1000, 1000)
    assert not owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    os.chown(home, UID, GID)
    assert not owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)


def test_without_user_namespaces_any_host_id_is_in_the_block(home: Path) -> None:
    os.chown(home, 1000, 100)
    assert top_settled(home, owner=(1000, 100), block=Block())
    assert not top_settled(home, owner=(1000, 1000), block=Block())


def test_a_missing_home_or_a_broken_record_means_walk(home: Path, tmp_path: Path) -> None:
    state = tmp_path / "home-owners.json"
    owners = HomeOwners(state)
    owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)
    assert not owners.settled(volume="h-alice", created="t1", path=home / "gone", block=BLOCK)
    for broken in (b"not json", b'{"version": 2, "volumes": {}}', b"[]",
                   b'{"version": 1, "volumes": {"h-alice": {"created": "t1", "block": [1000065536, 65536], '
                   b'"uid": "x", "gid": 1}}}'):
        state.write_bytes(broken)
        assert not owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)
    owners.record(volume="h-alice", created="t1", path=home, block=BLOCK)  # a broken record is replaced
    assert owners.settled(volume="h-alice", created="t1", path=home, block=BLOCK)
    assert state.stat().st_mode & 0o777 == 0o600
