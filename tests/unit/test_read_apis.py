"""The typed read APIs other packages use instead of reading files or picking record keys:
live grants from credentials, typed entries (responses included) from the audit log."""

from __future__ import annotations

import time
from pathlib import Path

from jovial_guard.audit.checkpoint import load_or_create_key
from jovial_guard.audit.entries import AuditEntry, ResponseRecord
from jovial_guard.audit.log import AuditLog
from jovial_guard.audit.query import Query, entries
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.credentials.query import LiveGrant, live_grants, live_grants_by_user

ALICE = dict(user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw", mount_path="/lustre/home")
BOB = dict(user="bob", uid=1001, gid=100, fileset="home/bob", mode="ro", mount_path="/lustre/home")


def test_live_grants_leave_out_expired_and_revoked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    issuer = Issuer.from_directory(state, create=True)
    kept = issuer.issue(**ALICE).grant
    short = issuer.issue(**BOB, lifetime=60).grant
    revoked = issuer.issue(**BOB).grant
    issuer.revoke(serial=revoked.serial, reason="admin request")

    now = time.time()
    assert {g.serial for g in live_grants(state, now=now)} == {kept.serial, short.serial}
    later = live_grants_by_user(state, now=now + 120)
    assert later == {"alice": [LiveGrant(kept.serial, "alice", "home/alice", "rw", "/lustre/home",
                                                 float(kept.expires))]}


def test_unreadable_revocation_list_shows_no_grant_as_live(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Issuer.from_directory(state, create=True).issue(**ALICE)
    (state / "revoked.json").write_text("{not json")
    assert live_grants(state) == []


def test_no_state_means_no_grants(tmp_path: Path) -> None:
    assert live_grants(tmp_path / "nothing") == []


def test_response_fields_round_trip() -> None:
    record = ResponseRecord(response_rule="shell", action="stop_server", outcome="done", detail="stopped",
                            trigger_rule="Terminal shell in container", trigger_record=7)
    assert ResponseRecord.from_fields(record.to_fields()) == record
    assert ResponseRecord.from_fields("junk") == ResponseRecord("", "", "", "", None, None)


def test_entries_are_typed_records_of_the_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=load_or_create_key(tmp_path / "keys" / "signing.key"))
    log.open()
    ts = "2026-12-01T00:00:00Z"
    event = b'{"kind":"falco","ts":"%s","rule":"Terminal shell in container","priority":"Notice","user":"alice"}' % ts.encode()
    fields = ResponseRecord("shell", "stop_server", "done", "stopped", "Terminal shell in container", 1).to_fields()
    import orjson

    response = orjson.dumps({"kind": "response", "ts": ts, "rule": "response stop_server", "priority": "Warning",
                             "user": "alice", "fields": fields})
    log.append_many([event, response, b'{"kind":"system"}'])
    log.close()
    found = list(entries(tmp_path, Query()))
    assert found[0] == AuditEntry(1, ts, "falco", "alice", "Terminal shell in container", "Notice")
    assert found[1].response == ResponseRecord("shell", "stop_server", "done", "stopped",
                                               "Terminal shell in container", 1)
    assert found[2] == AuditEntry(3, "", "system", None, "", "")
    assert [e.seq for e in entries(tmp_path, Query(kind="response"))] == [2]
