"""Issuer, keyring, revocation list and store: every refusal has its own clear reason."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jovial_guard.credentials import errors
from jovial_guard.credentials import revoke as module_revoke
from jovial_guard.credentials.envelope import from_token, key_id_of, to_token
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.credentials.keyring import LocalFileKeyring
from jovial_guard.credentials.revocation import Revocation, RevocationList
from jovial_guard.credentials.store import GrantStore

NOW = 1_764_230_400
ALICE: dict[str, Any] = dict(
    user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw", mount_path="/lustre/home"
)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return float(self.now)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def issuer(tmp_path: Path, clock: Clock) -> Issuer:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    return Issuer(
        keyring=LocalFileKeyring.create(keys / "kek.json"),
        store=GrantStore(tmp_path / "state" / "grants"),
        revocations=RevocationList(tmp_path / "state" / "revoked.json"),
        signer=Ed25519PrivateKey.generate(),
        lifetime=3600,
        clock=clock,
    )


def test_issue_then_verify(issuer: Issuer) -> None:
    issued = issuer.issue(**ALICE)
    grant = issuer.verify(issued.token, user="alice", fileset="home/alice")
    assert grant == issued.grant
    assert grant.expires - grant.issued == 3600
    assert grant.nodemap == "jg-alice"


def test_default_lifetime_is_a_working_day(tmp_path: Path) -> None:
    issuer = Issuer.from_directory(tmp_path / "state", create=True)
    grant = issuer.issue(**ALICE).grant
    assert grant.expires - grant.issued == 8 * 3600


def test_flipped_bit_is_invalid(issuer: Issuer) -> None:
    blob = bytearray(from_token(issuer.issue(**ALICE).token))
    for index in (0, 20, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x80
        with pytest.raises(errors.InvalidGrant, match="^invalid grant$"):
            issuer.verify(bytes(tampered), user="alice")


def test_garbage_token_is_invalid(issuer: Issuer) -> None:
    for token in ("", "!!!", "AQ", to_token(b"\x01" * 300)):
        with pytest.raises(errors.InvalidGrant):
            issuer.verify(token, user="alice")


def test_replay_for_another_user_or_fileset(issuer: Issuer) -> None:
    token = issuer.issue(**ALICE).token
    with pytest.raises(errors.GrantWrongUser, match="issued to 'alice', not 'bob'"):
        issuer.verify(token, user="bob")
    with pytest.raises(errors.GrantWrongFileset, match="covers fileset 'home/alice', not 'home/bob'"):
        issuer.verify(token, user="alice", fileset="home/bob")


def test_expired(issuer: Issuer, clock: Clock) -> None:
    token = issuer.issue(**ALICE).token
    clock.now += 3599
    issuer.verify(token, user="alice")
    clock.now += 1
    with pytest.raises(errors.GrantExpired, match="expired at"):
        issuer.verify(token, user="alice")


def test_revoked_by_serial_and_persisted(issuer: Issuer, tmp_path: Path) -> None:
    issued = issuer.issue(**ALICE)
    assert issuer.revoke(serial=issued.grant.serial, reason="admin request") == [issued.grant.serial]
    with pytest.raises(errors.GrantRevoked, match="admin request") as info:
        issuer.verify(issued.token, user="alice")
    assert info.value.reason == "admin request"
    # a fresh process (new objects) sees it: it was persisted
    again = RevocationList(tmp_path / "state" / "revoked.json")
    assert again.get(issued.grant.serial) is not None
    leftovers = [p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert (os.stat(tmp_path / "state" / "revoked.json.journal").st_mode & 0o777) == 0o600


def test_revoke_user_covers_all_their_grants_only(issuer: Issuer) -> None:
    a1 = issuer.issue(**ALICE)
    a2 = issuer.issue(**ALICE)
    bob = issuer.issue(**{**ALICE, "user": "bob", "fileset": "home/bob"})
    revoked = issuer.revoke(user="alice", reason="audit: crypto-miner")
    assert sorted(revoked) == sorted([a1.grant.serial, a2.grant.serial])
    issuer.verify(bob.token, user="bob")
    for token in (a1.token, a2.token):
        with pytest.raises(errors.GrantRevoked):
            issuer.verify(token, user="alice")


def test_revocation_seen_by_other_process_instances(issuer: Issuer, tmp_path: Path) -> None:
    issued = issuer.issue(**ALICE)
    other = RevocationList(tmp_path / "state" / "revoked.json")
    other.add([Revocation(issued.grant.serial, "alice", "from the CLI", NOW)])
    with pytest.raises(errors.GrantRevoked, match="from the CLI"):
        issuer.verify(issued.token, user="alice")


def test_module_revoke_api(tmp_path: Path) -> None:
    state = tmp_path / "state"
    issuer = Issuer.from_directory(state, create=True)
    issued = issuer.issue(**ALICE)
    assert module_revoke(user="alice", reason="audit responder", state_dir=state, key_dir=tmp_path / "keys") == [
        issued.grant.serial
    ]
    with pytest.raises(errors.GrantRevoked):
        issuer.verify(issued.token, user="alice")


def test_unreadable_revocation_list_fails_closed(issuer: Issuer, tmp_path: Path) -> None:
    issued = issuer.issue(**ALICE)
    (tmp_path / "state" / "revoked.json").write_text("{not json")
    with pytest.raises(errors.CredentialError, match="refusing all grants"):
        issuer.verify(issued.token, user="alice")


def test_revoke_arguments(issuer: Issuer) -> None:
    with pytest.raises(errors.GrantRequestInvalid, match="exactly one"):
        issuer.revoke(user="alice", serial="0" * 32, reason="x")
    with pytest.raises(errors.GrantRequestInvalid, match="reason"):
        issuer.revoke(user="alice", reason="")


def test_failing_listener_does_not_undo_revocation(issuer: Issuer) -> None:
    issued = issuer.issue(**ALICE)

    def boom(_: object) -> None:
        raise RuntimeError("agent down")

    issuer.listeners.append(boom)
    issuer.revoke(user="alice", reason="stop")
    with pytest.raises(errors.GrantRevoked):
        issuer.verify(issued.token, user="alice")


def test_renew_extends_live_grant_only(issuer: Issuer, clock: Clock) -> None:
    issued = issuer.issue(**ALICE)
    clock.now += 3000
    renewed = issuer.renew(issued.grant.serial)
    assert renewed.grant.serial == issued.grant.serial
    assert renewed.grant.expires == clock.now + 3600
    clock.now += 3000
    issuer.verify(renewed.token, user="alice")
    issuer.revoke(serial=issued.grant.serial, reason="stopped")
    with pytest.raises(errors.GrantRevoked):
        issuer.renew(issued.grant.serial)


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("user", "../root", "user"),
        ("user", "Alice", "user"),
        ("uid", 0, "never root"),
        ("gid", -1, "gid"),
        ("fileset", "../etc", "fileset"),
        ("fileset", "/abs", "fileset"),
        ("mode", "admin", "'ro' or 'rw'"),
        ("mount_path", "/lustre", "mount_path"),
        ("mount_path", "relative/x", "mount_path"),
    ],
)
def test_bad_issue_arguments_name_the_argument(issuer: Issuer, field: str, value: Any, words: str) -> None:
    with pytest.raises(errors.GrantRequestInvalid, match=words):
        issuer.issue(**{**ALICE, field: value})


def test_rotation_keeps_old_grants_readable_until_rewrap(issuer: Issuer) -> None:
    old = issuer.issue(**ALICE)
    keyring = issuer.keyring
    assert isinstance(keyring, LocalFileKeyring)
    assert keyring.rotate() == "k2"
    new = issuer.issue(**{**ALICE, "user": "bob", "fileset": "home/bob"})
    assert key_id_of(from_token(new.token)) == "k2"
    assert key_id_of(from_token(old.token)) == "k1"
    issuer.verify(old.token, user="alice")  # still readable
    with pytest.raises(errors.CredentialError, match="still wraps 1 grant"):
        issuer.retire_key("k1")
    report = issuer.rewrap()
    assert (report.rewrapped, report.already_current, report.failed) == (1, 1, ())
    assert issuer.keys_in_use() == {"k2": 2}
    stored = issuer.store.get(old.grant.serial)
    assert key_id_of(stored) == "k2"
    assert issuer.load(old.grant.serial) == old.grant
    issuer.retire_key("k1")
    assert keyring.key_ids() == ("k2",)
    with pytest.raises(errors.InvalidGrant):  # the pre-rewrap token died with its key
        issuer.verify(old.token, user="alice")
    issuer.verify(stored, user="alice")


def test_rewrap_reports_tampered_grant(issuer: Issuer) -> None:
    issued = issuer.issue(**ALICE)
    issuer.keyring.rotate()  # type: ignore[attr-defined]
    path = issuer.store.path_for(issued.grant.serial)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 1
    path.write_bytes(bytes(blob))
    assert issuer.rewrap().failed == (issued.grant.serial,)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_with_loose_permissions_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.json"
    LocalFileKeyring.create(path)
    path.chmod(mode)
    with pytest.raises(errors.KeyFilePermissions, match=f"mode {mode:04o}.*chmod 600 {path}"):
        LocalFileKeyring(path)


def test_key_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    LocalFileKeyring.create(path)
    os.chown(path, 12345, 12345)
    with pytest.raises(errors.KeyFilePermissions, match="owned by uid 12345"):
        LocalFileKeyring(path)


def test_signing_key_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    Issuer.from_directory(tmp_path / "state", create=True)
    (tmp_path / "keys" / "issuer-signing.key").chmod(0o644)
    with pytest.raises(errors.KeyFilePermissions, match="chmod 600"):
        Issuer.from_directory(tmp_path / "state")


@pytest.mark.parametrize(
    "content,words",
    [
        ("{", "malformed"),
        ('{"version": 2}', "unsupported version"),
        ('{"version": 1, "active": "k1", "keys": {"k1": {"key": "c2hvcnQ="}}}', "32-byte"),
        ('{"version": 1, "active": "k9", "keys": {}}', "active key"),
    ],
)
def test_malformed_keyring(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "kek.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(errors.KeyringError, match=words):
        LocalFileKeyring(path)


def test_missing_keyring_says_how_to_create(tmp_path: Path) -> None:
    with pytest.raises(errors.KeyringError, match="creds init"):
        LocalFileKeyring(tmp_path / "nope.json")


def test_no_plaintext_key_or_grant_on_disk(tmp_path: Path) -> None:
    """Scan the whole state directory for every secret the issuer handled."""
    state = tmp_path / "state"
    issuer = Issuer.from_directory(state, create=True)
    grants = [issuer.issue(**{**ALICE, "user": u, "fileset": f"home/{u}"}).grant for u in ("alice", "bob", "carol")]
    issuer.keyring.rotate()  # type: ignore[attr-defined]
    issuer.rewrap()
    issuer.revoke(user="bob", reason="test")
    kek_doc = json.loads((tmp_path / "keys" / "kek.json").read_text())
    import base64

    secrets = [base64.b64decode(k["key"]) for k in kek_doc["keys"].values()]
    needles: list[bytes] = []
    for secret in secrets:
        needles += [secret, base64.b64encode(secret), secret.hex().encode()]
    for grant in grants:
        needles += [grant.secret, base64.b64encode(grant.secret), grant.secret.hex().encode(), grant.to_json_bytes()]
    files = [p for p in state.rglob("*") if p.is_file()]
    index = [p for p in files if ".by-user" in p.parts]
    assert sorted(p.suffix for p in files if p not in index) == [".grant", ".grant", ".grant", ".journal", ".lock"]
    # bob's entry went with his revocation
    assert sorted(p.parent.name for p in index if not p.name.startswith(".")) == ["alice", "carol"]
    assert all(p.stat().st_size == 0 for p in index if not p.name.startswith("."))  # names only
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"secret material found in {path}"
    # the signing key lives with the KEKs, outside the state directory
    assert not any("signing" in p.name or "kek" in p.name for p in files)


def test_prune_forgets_long_expired_grants_only(issuer: Issuer, clock: Clock) -> None:
    old = issuer.issue(**ALICE)
    issuer.revoke(serial=old.grant.serial, reason="stopped")
    clock.now += 3600 + 7 * 86400 + 1
    fresh = issuer.issue(**ALICE)
    assert issuer.prune() == [old.grant.serial]
    assert issuer.store.serials() == [fresh.grant.serial]
    assert issuer.revocations.get(old.grant.serial) is None
    with pytest.raises(errors.GrantExpired):  # the old token is still refused, by its expiry
        issuer.verify(old.token, user="alice")


def test_concurrent_revocation_writers_do_not_lose_entries(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "revoked.json"
    lists = [RevocationList(path) for _ in range(4)]

    def writer(k: int) -> None:
        for i in range(25):
            lists[k].add([Revocation(f"{k:02x}{i:030x}", "u", "r", NOW)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(RevocationList(path).all()) == 100
