"""Per-user id blocks: the host range checks, the allocation kept in state, the engine mode."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from jovial_guard.hardening.subids import (
    BLOCK,
    IdRange,
    SubidRangeMissing,
    check_range,
    ensure_host_range,
    login_defs_ranges,
    parse_subid,
    project_range,
)
from jovial_guard.hardening.userns import IdMap, UserRanges, UsernsStateInvalid, host_range

DEBIAN_DEFS = """
UID_MIN			 1000
UID_MAX			60000
SUB_UID_MIN		   100000
SUB_UID_MAX		600100000
GID_MIN			 1000
GID_MAX			60000
"""
RANGE = IdRange(1_000_000_000, 16 * BLOCK)


def test_parse_subid_skips_malformed_lines() -> None:
    text = "alice:100000:65536\n# comment\nbroken\nbob:x:1\njovial-guard:1000000000:1048576\n"
    assert parse_subid(text) == [("alice", IdRange(100000, 65536)),
                                 ("jovial-guard", IdRange(1_000_000_000, 1_048_576))]


def test_the_default_range_is_outside_every_login_range() -> None:
    ranges = login_defs_ranges(DEBIAN_DEFS)
    assert ranges["UID"] == IdRange(1000, 59001)
    assert not RANGE.overlaps(ranges["UID"]) and not RANGE.overlaps(ranges["SUB_UID"])
    assert check_range(RANGE, kind="uid", subid_text="alice:100000:65536\n",
                       login_defs_text=DEBIAN_DEFS, account_ids=[0, 1000, 65534]) == []


@pytest.mark.parametrize(("wanted", "subid", "ids", "why"), [
    (IdRange(50000, 2 * BLOCK), "", [], "overlaps login.defs UID_MIN..MAX"),
    (RANGE, "alice:1000100000:65536\n", [], "overlaps alice's subordinate range"),
    (RANGE, "", [1_000_000_005], "contains ids of real accounts"),
    (IdRange(2**31 - BLOCK, 2 * BLOCK), "", [], "past 2^31-1"),
    (IdRange(1_000_000_000, 10), "", [], "fewer than one block"),
])
def test_a_conflicting_range_is_refused(wanted: IdRange, subid: str, ids: list[int], why: str) -> None:
    problems = check_range(wanted, kind="uid", subid_text=subid, login_defs_text=DEBIAN_DEFS,
                           account_ids=ids)
    assert any(why in p for p in problems), problems


def test_set_up_keeps_an_existing_entry_and_refuses_conflicts(tmp_path: Path) -> None:
    subuid, subgid, defs = tmp_path / "subuid", tmp_path / "subgid", tmp_path / "login.defs"
    defs.write_text(DEBIAN_DEFS)
    subuid.write_text("root:1000000000:1048576\n")
    subgid.write_text("root:1000000000:1048576\nsomeone:1000500000:65536\n")
    with pytest.raises(SubidRangeMissing, match="overlaps someone's subordinate range"):
        ensure_host_range(account="root", subuid=subuid, subgid=subgid, login_defs=defs)
    assert subuid.read_text() == "root:1000000000:1048576\n"  # nothing changed


def test_set_up_adds_the_range_once(tmp_path: Path) -> None:
    subuid, subgid, defs = tmp_path / "subuid", tmp_path / "subgid", tmp_path / "login.defs"
    defs.write_text(DEBIAN_DEFS)
    # "root" exists, so no account is created; only the files change.
    changes = ensure_host_range(account="root", subuid=subuid, subgid=subgid, login_defs=defs)
    assert [c.split(" to ")[1].split()[0] for c in changes] == [str(subuid), str(subgid)]
    assert ensure_host_range(account="root", subuid=subuid, subgid=subgid, login_defs=defs) == []
    assert subuid.read_text() == "root:1000000000:1073741824\n"
    assert host_range(account="root", subuid=subuid, subgid=subgid) == IdRange(1_000_000_000, 1_073_741_824)


def test_a_missing_range_names_the_set_up_step(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("")
    with pytest.raises(SubidRangeMissing, match="10-subids.sh"):
        project_range(tmp_path / "subuid")
    (tmp_path / "subgid").write_text("jovial-guard:1000000000:1048576\n")
    (tmp_path / "subuid").write_text("jovial-guard:1000000000:2097152\n")
    with pytest.raises(SubidRangeMissing, match="differ"):
        host_range(subuid=tmp_path / "subuid", subgid=tmp_path / "subgid")


def test_blocks_are_distinct_stable_and_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "engine" / "userns.json"
    ranges = UserRanges(state, RANGE)
    alice, bob = ranges.allocate("alice"), ranges.allocate("bob")
    assert alice == IdMap(1_000_000_000) and bob == IdMap(1_000_000_000 + BLOCK)
    assert alice.to_host(1000) != bob.to_host(1000)
    again = UserRanges(state, RANGE)  # a restarted hub reads the state file
    assert again.lookup("alice") == alice and again.allocate("bob") == bob
    assert again.allocate("carol").host_start == 1_000_000_000 + 2 * BLOCK
    assert json.loads(state.read_text())["users"] == {"alice": 0, "bob": 1, "carol": 2}
    assert state.stat().st_mode & 0o777 == 0o600


def test_a_known_block_is_answered_without_the_file(tmp_path: Path) -> None:
    """A block is a user's for good: once this process has given or read it, a spawn gets
    it without the state file or its lock; a user never seen is not invented."""
    state = tmp_path / "userns.json"
    ranges = UserRanges(state, RANGE)
    assert ranges.known("alice") is None
    alice = ranges.allocate("alice")
    state.unlink()
    assert ranges.known("alice") == alice == ranges.allocate("alice")
    assert not state.exists()
    assert ranges.known("bob") is None
    bob = UserRanges(tmp_path / "other.json", RANGE)
    bob.allocate("bob")
    reader = UserRanges(tmp_path / "other.json", RANGE)
    assert reader.known("bob") is None and reader.lookup("bob") == reader.known("bob") is not None


def test_concurrent_allocation_never_shares_a_block(tmp_path: Path) -> None:
    state = tmp_path / "userns.json"
    got: dict[str, IdMap] = {}

    def take(name: str) -> None:
        got[name] = UserRanges(state, RANGE).allocate(name)

    threads = [threading.Thread(target=take, args=(f"user{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = [m.host_start for m in got.values()]
    assert len(set(starts)) == 12


def test_a_full_range_or_a_changed_range_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "userns.json"
    small = UserRanges(state, IdRange(1_000_000_000, 2 * BLOCK))
    small.allocate("a"), small.allocate("b")
    with pytest.raises(UsernsStateInvalid, match="all 2 user-namespace blocks"):
        small.allocate("c")
    with pytest.raises(UsernsStateInvalid, match="restore the old range"):
        UserRanges(state, RANGE).allocate("a")


@pytest.mark.parametrize("doc", [
    b"not json",
    b'{"version": 2, "range": {"start": 1000000000, "count": 1048576}, "block": 65536, "users": {}}',
    b'{"version": 1, "range": {"start": 1000000000, "count": 1048576}, "block": 65536, '
    b'"users": {"a": 0, "b": 0}}',
    b'{"version": 1, "range": {"start": 1000000000, "count": 1048576}, "block": 65536, '
    b'"users": {"a": 99}}',
    b'{"version": 1, "range": {"start": 1000000000, "count": 1048576}, "block": 65536, '
    b'"users": {"a": true}}',
])
def test_a_bad_state_file_allocates_nothing(tmp_path: Path, doc: bytes) -> None:
    state = tmp_path / "userns.json"
    state.write_bytes(doc)
    with pytest.raises(UsernsStateInvalid):
        UserRanges(state, RANGE).allocate("alice")
    assert state.read_bytes() == doc


def test_the_engine_mode_maps_exactly_the_block() -> None:
    block = IdMap(1_000_065_536)
    assert block.userns_mode() == ("auto:size=65536,uidmapping=0:1000065536:65536,"
                                   "gidmapping=0:1000065536:65536")
    assert block.to_host(1000) == 1_000_066_536
    with pytest.raises(ValueError, match="outside the mapping"):
        block.to_host(65536)
