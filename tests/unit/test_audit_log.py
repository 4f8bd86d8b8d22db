"""The tamper-evident log: every kind of edit is caught at the right record; torn tails are
recovered; rotation keeps the chain. Real files, real Ed25519, real SHA-256."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jovial_guard.audit.checkpoint import parse_checkpoint, sign
from jovial_guard.audit.log import CHECKPOINT_FILE, AuditLog, LogCorrupted, log_files
from jovial_guard.audit.merkle import CompactRange, leaf_hash, merkle_root
from jovial_guard.audit.record import GENESIS, build_line
from jovial_guard.audit.verify import LogVerificationFailed, verify_log

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def body(i: int) -> bytes:
    return orjson.dumps({"v": 1, "ts": f"2026-11-27T05:00:{i % 60:02d}.000000Z", "kind": "falco",
                         "rule": "Terminal shell in container", "priority": "Notice", "user": f"u{i % 7}",
                         "n": i})


def make_log(directory: Path, n: int = 100, *, every: int = 25, max_file_bytes: int = 1 << 20,
             batch: int = 10) -> AuditLog:
    log = AuditLog(directory, key=KEY, checkpoint_every=every, checkpoint_interval=3600,
                   max_file_bytes=max_file_bytes)
    log.open()
    for start in range(1, n + 1, batch):
        log.append_many([body(i) for i in range(start, min(start + batch, n + 1))])
    log.close()
    return log


def lines(directory: Path) -> list[bytes]:
    return (directory / "audit-000001.log").read_bytes().splitlines(keepends=True)


def write_lines(directory: Path, new: list[bytes]) -> None:
    (directory / "audit-000001.log").write_bytes(b"".join(new))


def failure(directory: Path, workers: int = 1) -> LogVerificationFailed:
    with pytest.raises(LogVerificationFailed) as info:
        verify_log(directory, KEY.public_key(), workers=workers)
    return info.value


def test_merkle_compact_range_matches_rfc6962_definition() -> None:
    leaves = [leaf_hash(b"entry %d" % i) for i in range(70)]
    for n in range(71):
        cr = CompactRange()
        for leaf in leaves[:n]:
            cr.append(leaf)
        assert cr.root() == merkle_root(leaves[:n])
    # RFC 6962 prefixes: leaf 0x00, node 0x01 (checked against hashlib directly)
    import hashlib
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle_root(leaves[:2]) == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()


def test_clean_log_verifies(tmp_path: Path) -> None:
    make_log(tmp_path)
    report = verify_log(tmp_path, KEY.public_key(), workers=1)
    assert report.records == 100 and report.signed_records == 100 and report.unsigned_tail == 0
    assert report.checkpoints == 4


def test_record_format_is_versioned_and_chained(tmp_path: Path) -> None:
    make_log(tmp_path, 3)
    first, second = lines(tmp_path)[:2]
    assert first.startswith(b"v1 ") and second.startswith(b"v1 ")
    line, _, chain = build_line(1, body(1), GENESIS)
    assert line == first
    assert build_line(2, body(2), chain)[0] == second


@pytest.mark.parametrize("workers", [1, 2])
def test_modified_byte_is_named(tmp_path: Path, workers: int) -> None:
    make_log(tmp_path)
    content = lines(tmp_path)
    content[39] = content[39].replace(b'"user":"u5"', b'"user":"u6"')
    write_lines(tmp_path, content)
    err = failure(tmp_path, workers)
    assert err.record == 40 and err.line == 40 and "modified" in err.reason


def test_deleted_record_is_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    content = lines(tmp_path)
    del content[39]
    write_lines(tmp_path, content)
    err = failure(tmp_path)
    assert err.record == 40 and "missing" in err.reason


def test_reordered_records_are_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    content = lines(tmp_path)
    content[39], content[40] = content[40], content[39]
    write_lines(tmp_path, content)
    err = failure(tmp_path)
    assert err.record == 40 and "deleted or reordered" in err.reason


def test_duplicated_record_is_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    content = lines(tmp_path)
    content.insert(40, content[39])
    write_lines(tmp_path, content)
    err = failure(tmp_path)
    assert err.record == 41 and "again" in err.reason


def test_truncation_is_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    write_lines(tmp_path, lines(tmp_path)[:60])
    err = failure(tmp_path)
    assert err.record == 61 and "truncated" in err.reason


def test_truncation_mid_record_is_named(tmp_path: Path) -> None:
    make_log(tmp_path)
    data = (tmp_path / "audit-000001.log").read_bytes()
    (tmp_path / "audit-000001.log").write_bytes(data[:-30])
    err = failure(tmp_path)
    assert err.record == 100 and "incomplete" in err.reason


def _rehash_from(content: list[bytes], index: int, new_body: bytes) -> list[bytes]:
    """What an attacker without the key can do: rewrite a record and recompute the chain."""
    out = content[:index]
    prev = bytes.fromhex(content[index - 1][3:67].decode()) if index else GENESIS
    for i in range(index, len(content)):
        entry = content[i][68:-1]
        seq, _, b = entry.partition(b" ")
        if i == index:
            b = new_body
        line, _, prev = build_line(int(seq), b, prev)
        out.append(line)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_edit_and_rechain_without_key_is_caught_by_checkpoint(tmp_path: Path, workers: int) -> None:
    make_log(tmp_path)
    content = _rehash_from(lines(tmp_path), 39, body(40).replace(b'"u5"', b'"nobody"'))
    write_lines(tmp_path, content)
    err = failure(tmp_path, workers)
    # The chain is consistent again; the signed Merkle checkpoint at 50 is not. Signed
    # subtrees at 25 (matching) and within the size-50 frontier (32+16+2) narrow it to 33..48.
    assert err.checkpoint == 2 and "rewritten" in err.reason
    assert err.record is not None and 26 <= err.record <= 40


def test_edit_and_rechain_is_named_exactly_with_per_record_checkpoints(tmp_path: Path) -> None:
    make_log(tmp_path, 60, every=1, batch=1)
    write_lines(tmp_path, _rehash_from(lines(tmp_path), 39, body(40).replace(b'"u5"', b'"nobody"')))
    err = failure(tmp_path)
    assert err.record == 40


def test_forged_checkpoint_is_rejected(tmp_path: Path) -> None:
    make_log(tmp_path)
    cps = (tmp_path / CHECKPOINT_FILE).read_bytes().splitlines(keepends=True)
    doc = orjson.loads(cps[1][3:])
    doc["size"] = 49
    cps[1] = b"v1 " + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"".join(cps))
    err = failure(tmp_path)
    assert err.checkpoint == 2 and "invalid signature" in err.reason


def test_checkpoints_resigned_with_another_key_are_rejected(tmp_path: Path) -> None:
    make_log(tmp_path)
    content = _rehash_from(lines(tmp_path), 39, body(40).replace(b'"u5"', b'"nobody"'))
    write_lines(tmp_path, content)
    # The attacker recomputes every checkpoint and signs them with their own key.
    attacker = Ed25519PrivateKey.generate()
    leaves = [leaf_hash(line[68:-1].split(b" ", 1)[1]) for line in content]
    forged = []
    for line in (tmp_path / CHECKPOINT_FILE).read_bytes().splitlines(keepends=True):
        cp = parse_checkpoint(line)
        cr = CompactRange()
        for leaf in leaves[:cp.size]:
            cr.append(leaf)
        head = bytes.fromhex(content[cp.size - 1][3:67].decode())
        forged.append(sign(type(cp)(**{**cp.__dict__, "root": cr.root(), "head": head,
                                       "frontier": tuple(cr.nodes)}), attacker).to_line())
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"".join(forged))
    err = failure(tmp_path)
    assert err.checkpoint == 1 and "different key" in err.reason


def test_torn_tail_is_recovered_and_nothing_earlier_lost(tmp_path: Path) -> None:
    make_log(tmp_path, 50)
    path = tmp_path / "audit-000001.log"
    before = path.read_bytes()
    torn_line, _, _ = build_line(51, body(51), bytes(32))
    path.write_bytes(before + torn_line[:57])  # a crash mid-write
    with pytest.raises(LogVerificationFailed) as info:
        verify_log(tmp_path, KEY.public_key(), workers=1)
    assert info.value.record == 51 and "torn" in info.value.reason
    log = AuditLog(tmp_path, key=KEY)
    report = log.open()
    assert report.torn_bytes == 57 and report.size == 50
    assert Path(report.saved_to or "").read_bytes() == torn_line[:57]
    assert path.read_bytes() == before
    log.append_many([body(51)])
    log.close()
    assert verify_log(tmp_path, KEY.public_key(), workers=1).records == 51


def test_garbage_tail_after_power_loss_is_recovered(tmp_path: Path) -> None:
    make_log(tmp_path, 20)
    path = tmp_path / "audit-000001.log"
    with open(path, "ab") as fh:
        fh.write(b"\x00" * 300 + b"\n")
    report = AuditLog(tmp_path, key=KEY).open()
    assert report.size == 20 and report.torn_bytes == 301


def test_corruption_before_the_tail_refuses_to_open(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY, checkpoint_every=10, checkpoint_interval=3600)
    log.open()
    log.append_many([body(i) for i in range(1, 31)])  # signed up to 30
    log.append_many([body(i) for i in range(31, 36)])  # 31..35 not yet signed (writer "crashed")
    content = lines(tmp_path)
    content[32] = content[32].replace(b'"n":33', b'"n":99')
    write_lines(tmp_path, content)
    with pytest.raises(LogCorrupted, match="record 33"):
        AuditLog(tmp_path, key=KEY).open()


def test_log_shorter_than_checkpoint_refuses_to_open(tmp_path: Path) -> None:
    make_log(tmp_path, 40, every=10)
    write_lines(tmp_path, lines(tmp_path)[:30])
    with pytest.raises(LogCorrupted, match="truncated"):
        AuditLog(tmp_path, key=KEY).open()


def test_rotation_keeps_the_chain_and_detects_a_deleted_file(tmp_path: Path) -> None:
    make_log(tmp_path, 300, every=50, max_file_bytes=8192)
    files = log_files(tmp_path)
    assert len(files) >= 4
    assert verify_log(tmp_path, KEY.public_key(), workers=2).records == 300
    # Reopen and continue: the chain goes on in the newest file.
    log = AuditLog(tmp_path, key=KEY, max_file_bytes=8192)
    assert log.open().size == 300
    log.append_many([body(301)])
    log.close()
    assert verify_log(tmp_path, KEY.public_key(), workers=1).records == 301
    first_of_third = int(files[2].read_bytes().split(b" ", 3)[2])
    files[1].unlink()
    err = failure(tmp_path)
    assert err.file == files[2].name and err.line == 1 and "missing" in err.reason
    assert err.record is not None and err.record < first_of_third


def test_unsigned_tail_is_reported(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY, checkpoint_every=10, checkpoint_interval=3600)
    log.open()
    log.append_many([body(i) for i in range(1, 11)])
    log.append_many([body(i) for i in range(11, 16)])
    # no close(): the last 5 records are chained but not yet signed
    report = verify_log(tmp_path, KEY.public_key(), workers=1)
    assert report.records == 15 and report.signed_records == 10 and report.unsigned_tail == 5


def test_write_failure_leaves_no_partial_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=KEY)
    log.open()
    log.append_many([body(1)])
    os.close(log._fd)  # the disk goes away under the writer
    from jovial_guard.audit.log import AuditWriteFailed
    with pytest.raises(AuditWriteFailed):
        log.append_many([body(2)])
    assert log.size == 1
