"""The per-user grant index: out of step with the store, it is repaired and never makes a
revoked or expired grant live. The reference is the full scan of every grant header."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jovial_guard.credentials.envelope import seal
from jovial_guard.credentials.grant import Grant
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.credentials.keyring import LocalFileKeyring
from jovial_guard.credentials.revocation import RevocationList
from jovial_guard.credentials.store import GrantStore
from jovial_guard.credentials.user_index import GRACE, INDEX_DIR, MARKER

NOW = 1_764_230_400
USERS = ("alice", "bob", "carol")


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return float(self.now)


def args(user: str) -> dict[str, Any]:
    return dict(user=user, uid=1000, gid=100, fileset=f"home/{user}", mode="rw", mount_path="/lustre/home")


def open_issuer(tmp_path: Path, clock: Clock) -> Issuer:
    """A fresh Issuer over the same files: what a new process sees."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    kek = keys / "kek.json"
    return Issuer(
        keyring=LocalFileKeyring(kek) if kek.exists() else LocalFileKeyring.create(kek),
        store=GrantStore(tmp_path / "state" / "grants"),
        revocations=RevocationList(tmp_path / "state" / "revoked.json"),
        signer=Ed25519PrivateKey.generate(),
        lifetime=3600,
        clock=clock,
    )


def reference(issuer: Issuer, user: str) -> list[str]:
    """The definition: every stored header of ``user``, not revoked, not expired."""
    now = int(issuer.clock())
    return [s for s, h, r in issuer.list_grants()
            if h is not None and h["user"] == user and r is None and h["expires"] > now]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def issuer(tmp_path: Path, clock: Clock) -> Issuer:
    return open_issuer(tmp_path, clock)


def index_dir(issuer: Issuer) -> Path:
    return issuer.store.directory / INDEX_DIR


def test_live_serials_skip_revoked_and_expired_and_drop_their_entries(issuer: Issuer, clock: Clock) -> None:
    old = issuer.issue(**args("alice")).grant
    short = issuer.issue_at(NOW, lifetime=10, **args("alice")).grant
    issuer.revoke(serial=old.serial, reason="replaced")
    clock.now += 10
    live = issuer.issue(**args("alice")).grant
    assert issuer.live_serials(user="alice") == [live.serial] == reference(issuer, "alice")
    assert sorted(os.listdir(index_dir(issuer) / "alice")) == [live.serial]
    assert short.serial not in issuer.live_serials(user="alice")


def test_deleted_index_is_rebuilt_without_reviving_revoked_or_expired(issuer: Issuer, clock: Clock) -> None:
    revoked = issuer.issue(**args("alice")).grant
    issuer.issue_at(NOW, lifetime=5, **args("alice"))
    live = issuer.issue(**args("alice")).grant
    issuer.revoke(serial=revoked.serial, reason="audit")
    clock.now += 5
    assert issuer.live_serials(user="alice") == [live.serial]
    shutil.rmtree(index_dir(issuer))  # while the process runs
    assert issuer.live_serials(user="alice") == [live.serial]
    assert (index_dir(issuer) / MARKER).exists()
    shutil.rmtree(index_dir(issuer))  # and in a new process
    assert open_issuer(issuer.store.directory.parents[1], clock).live_serials(user="alice") == [live.serial]


def test_missing_entry_is_restored_by_the_next_process(tmp_path: Path, issuer: Issuer, clock: Clock) -> None:
    """An entry lost in a power cut (entries are not fsync'd) comes back before any answer."""
    live = issuer.issue(**args("alice")).grant
    (index_dir(issuer) / "alice" / live.serial).unlink()
    again = open_issuer(tmp_path, clock)
    assert again.live_serials(user="alice") == [live.serial]
    assert (index_dir(again) / "alice" / live.serial).exists()


def test_stale_entry_without_grant_file_is_not_live_and_is_cleared(issuer: Issuer, clock: Clock) -> None:
    """A crash between the entry and the grant file, or a grant file removed by hand."""
    live = issuer.issue(**args("alice")).grant
    gone = issuer.issue(**args("alice")).grant
    issuer.store.path_for(gone.serial).unlink()  # grant file removed
    ghost = "ab" * 16
    (index_dir(issuer) / "alice" / ghost).touch()  # entry whose grant was never written
    assert issuer.live_serials(user="alice") == [live.serial] == reference(issuer, "alice")
    old = time.time() - GRACE - 60
    for serial in (gone.serial, ghost):
        os.utime(index_dir(issuer) / "alice" / serial, (old, old))
    (index_dir(issuer) / MARKER).unlink()  # forces a rebuild
    assert issuer.live_serials(user="alice") == [live.serial]
    assert sorted(os.listdir(index_dir(issuer) / "alice")) == [live.serial]


def test_recent_entry_without_file_survives_a_rebuild(issuer: Issuer) -> None:
    """Another process may be between creating the entry and writing the grant."""
    issuer.issue(**args("alice"))
    issuer.live_serials(user="alice")  # index complete
    pending = "cd" * 16
    (index_dir(issuer) / "alice" / pending).touch()
    (index_dir(issuer) / MARKER).unlink()
    issuer.live_serials(user="alice")
    assert (index_dir(issuer) / "alice" / pending).exists()


def test_entry_under_the_wrong_user_is_moved_never_reported(issuer: Issuer) -> None:
    bobs = issuer.issue(**args("bob")).grant
    issuer.live_serials(user="bob")  # index complete
    (index_dir(issuer) / "alice").mkdir()
    os.rename(index_dir(issuer) / "bob" / bobs.serial, index_dir(issuer) / "alice" / bobs.serial)
    assert issuer.live_serials(user="alice") == []
    assert issuer.live_serials(user="bob") == [bobs.serial]


def test_revocation_by_another_process_is_seen(tmp_path: Path, issuer: Issuer, clock: Clock) -> None:
    live = issuer.issue(**args("alice")).grant
    assert issuer.live_serials(user="alice") == [live.serial]
    open_issuer(tmp_path, clock).revoke(serial=live.serial, reason="from the CLI")
    assert issuer.live_serials(user="alice") == []


def test_revoked_grant_stays_revoked_after_rewrap_and_index_loss(tmp_path: Path, issuer: Issuer,
                                                                clock: Clock) -> None:
    """Rewrap re-creates entries of revoked grants; the revocation list still decides."""
    revoked = issuer.issue(**args("alice")).grant
    issuer.revoke(user="alice", reason="audit")
    issuer.keyring.rotate()  # type: ignore[attr-defined]
    assert issuer.rewrap().rewrapped == 1
    assert (index_dir(issuer) / "alice" / revoked.serial).exists()
    assert issuer.live_serials(user="alice") == []
    shutil.rmtree(index_dir(issuer))
    assert open_issuer(tmp_path, clock).live_serials(user="alice") == []


def test_prune_removes_entries(issuer: Issuer, clock: Clock) -> None:
    old = issuer.issue(**args("alice")).grant
    clock.now += 3600 + 8 * 86400
    assert issuer.prune() == [old.serial]
    assert not (index_dir(issuer) / "alice" / old.serial).exists()


def test_bad_user_names_in_headers_are_never_indexed_as_paths(issuer: Issuer) -> None:
    assert issuer.live_serials(user="../alice") == []
    assert issuer.live_serials(user="") == []


def test_random_history_matches_the_full_scan(tmp_path: Path, issuer: Issuer, clock: Clock) -> None:
    """Issue, revoke, expire, prune, rewrap, lose the index or a grant, restart: in every
    state the index answer equals the full scan's."""
    rng = random.Random(1764)
    sample = issuer.issue(**args("alice")).grant
    for step in range(300):
        op = rng.randrange(10)
        user = rng.choice(USERS)
        if op <= 2:
            issuer.issue(lifetime=rng.choice((60, 600, 3600)), **args(user))
        elif op == 3:
            live = issuer.live_serials(user=user)
            if live:
                issuer.revoke(serial=rng.choice(live), reason="replaced")
        elif op == 4:
            issuer.revoke(user=user, reason="stopped")
        elif op == 5:
            clock.now += rng.choice((30, 300, 86400))
        elif op == 6 and step % 5 == 0:
            shutil.rmtree(index_dir(issuer), ignore_errors=True)
        elif op == 7:
            serials = issuer.store.serials()
            if serials:
                issuer.store.path_for(rng.choice(serials)).unlink()
        elif op == 8:
            issuer.prune(retention=rng.choice((0, 600)))
            if rng.random() < 0.3:
                issuer.keyring.rotate()  # type: ignore[attr-defined]
                issuer.rewrap(durable=False)
        else:
            issuer = open_issuer(tmp_path, clock)
            # a grant written by a copy of the code that kept no index
            g = Grant(**{**sample.__dict__, "serial": os.urandom(16).hex(), "user": user, "fileset": f"home/{user}",
                         "nodemap": f"jg-{user}", "issued": clock.now, "expires": clock.now + 600})
            issuer.store.path_for(g.serial).write_bytes(seal(g, keyring=issuer.keyring))
            issuer = open_issuer(tmp_path, clock)
        for u in USERS:
            assert issuer.live_serials(user=u) == reference(issuer, u), f"step {step} op {op} user {u}"


def counted_reads(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The serials of the grant files the issuer reads from now on."""
    reads: list[str] = []
    get = issuer.store.get

    def counting_get(serial: str) -> bytes:
        reads.append(serial)
        return get(serial)

    monkeypatch.setattr(issuer.store, "get", counting_get)
    return reads


def test_spawn_step_reads_only_the_users_grants(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first answer, finding and revoking a user's grant reads no one else's file."""
    for i in range(300):
        issuer.issue(**args(f"u{i % 30}"))
    mine = issuer.issue(**args("alice")).grant
    issuer.live_serials(user="alice")  # first use: the rebuild reads every header once
    reads = counted_reads(issuer, monkeypatch)
    for serial in issuer.live_serials(user="alice"):
        issuer.revoke(serial=serial, reason="replaced by a new spawn")
    new = issuer.issue(**args("alice")).grant
    assert set(reads) == {mine.serial}
    assert issuer.live_serials(user="alice") == [new.serial]


def test_revoking_a_user_reads_only_their_grants_and_drops_their_entries(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's stop revokes its user's grants: it reads that user's grant files only, revokes
    every live one (as a full scan would), and their index entries go with the revocation."""
    for i in range(300):
        issuer.issue(**args(f"u{i % 30}"))
    alices = {issuer.issue(**args("alice")).grant.serial for _ in range(3)}
    issuer.live_serials(user="alice")  # first use: the rebuild reads every header once
    reads = counted_reads(issuer, monkeypatch)
    assert set(issuer.revoke(user="alice", reason="server stopped")) == alices == set(reads)
    assert reference(issuer, "alice") == [] and issuer.live_serials(user="alice") == []
    assert not any((index_dir(issuer) / "alice").iterdir())
    assert all(issuer.revocations.get(serial) is not None for serial in alices)
    assert len(issuer.live_serials(user="u7")) == 10
