"""Generate audit-chain vectors: one good log and tampered copies that must fail verify.

Run: python tests/vectors/audit/chains/generate.py

Deterministic: a fixed Ed25519 key (bytes 0..31, test only), a fixed clock and fixed
bodies, so the good log's bytes are a format fixture (tests rebuild it and compare).
index.json says, for each directory, whether it verifies and which record must be named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jovial_guard.audit.checkpoint import write_public_key
from jovial_guard.audit.log import AuditLog
from jovial_guard.audit.record import build_line

HERE = Path(__file__).resolve().parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
RECORDS = 40


def body(i: int) -> bytes:
    return orjson.dumps({"v": 1, "ts": f"2026-11-27T05:00:{i:02d}.000000Z", "kind": "falco",
                         "rule": "Terminal shell in container", "priority": "Notice",
                         "user": ["alice", "bob", None][i % 3], "n": i})


def build_good(directory: Path) -> None:
    """The good log: 40 records in batches of 5, a checkpoint every 10 records."""
    clock = iter(range(1795496400, 1795496400 + 10_000)).__next__
    log = AuditLog(directory, key=KEY, checkpoint_every=10, checkpoint_interval=1e9,
                   clock=lambda: float(clock()))
    log.open()
    for start in range(1, RECORDS + 1, 5):
        log.append_many([body(i) for i in range(start, start + 5)])
    log.close()
    write_public_key(KEY.public_key(), directory / "signing.pub")


def lines_of(d: Path) -> list[bytes]:
    return (d / "audit-000001.log").read_bytes().splitlines(keepends=True)


def write_lines(d: Path, lines: list[bytes]) -> None:
    (d / "audit-000001.log").write_bytes(b"".join(lines))


def variant(name: str) -> Path:
    d = HERE / name
    shutil.copytree(HERE / "good", d)
    return d


def main() -> None:
    for child in HERE.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    build_good(HERE / "good")
    index: dict[str, dict[str, object]] = {"good": {"valid": True, "records": RECORDS}}

    d = variant("modified_byte")
    lines = lines_of(d)
    lines[16] = lines[16].replace(b'"n":17', b'"n":71')
    write_lines(d, lines)
    index[d.name] = {"valid": False, "record": 17, "reason": "does not match its chain hash"}

    d = variant("deleted_record")
    lines = lines_of(d)
    del lines[16]
    write_lines(d, lines)
    index[d.name] = {"valid": False, "record": 17, "reason": "missing"}

    d = variant("reordered_records")
    lines = lines_of(d)
    lines[16], lines[17] = lines[17], lines[16]
    write_lines(d, lines)
    index[d.name] = {"valid": False, "record": 17, "reason": "deleted or reordered"}

    d = variant("truncated")
    write_lines(d, lines_of(d)[:25])
    index[d.name] = {"valid": False, "record": 26, "reason": "truncated"}

    d = variant("rechained_without_key")
    lines = lines_of(d)
    prev = bytes.fromhex(lines[15][3:67].decode())
    out = lines[:16]
    for i in range(16, len(lines)):
        seq = i + 1
        b = body(seq) if seq != 17 else body(17).replace(b'"n":17', b'"n":99')
        line, _, prev = build_line(seq, b, prev)
        out.append(line)
    write_lines(d, out)
    # Checkpoint #2 (size 20) fails; its signed frontier (16 + 4) pins the edit to 17..20.
    index[d.name] = {"valid": False, "record": 17, "reason": "do not match signed checkpoint"}

    d = variant("forged_checkpoint")
    cps = (d / "checkpoints.log").read_bytes().splitlines(keepends=True)
    doc = orjson.loads(cps[2][3:])
    doc["size"] = 29
    cps[2] = b"v1 " + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"
    (d / "checkpoints.log").write_bytes(b"".join(cps))
    index[d.name] = {"valid": False, "checkpoint": 3, "reason": "invalid signature"}

    (HERE / "index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
