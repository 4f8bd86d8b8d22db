"""`jovial-guard audit verify` and `audit query` as a user runs them (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from jovial_guard.audit.checkpoint import load_or_create_key
from jovial_guard.audit.log import AuditLog

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jovial_guard.cli", "audit", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "audit"
    key = load_or_create_key(directory / "keys" / "signing.key")
    log = AuditLog(directory, key=key, checkpoint_every=10, clock=lambda: 1795496400.0)
    log.open()
    events = []
    for i in range(30):
        events.append(orjson.dumps({
            "v": 1, "ts": f"2026-11-27T05:{i:02d}:00.000000Z", "kind": ["falco", "falco", "engine"][i % 3],
            "rule": ["Terminal shell in container", "Read sensitive file untrusted", "container oom"][i % 3],
            "priority": ["Notice", "Warning", "Warning"][i % 3],
            "user": ["alice", "bob", None][i % 3], "attribution": "registry" if i % 3 != 2 else "unattributed",
        }))
    log.append_many(events)
    log.close()
    return directory


def test_verify_ok_and_failure_names_the_record(log_dir: Path) -> None:
    ok = cli("verify", "--dir", str(log_dir))
    assert ok.returncode == 0 and "OK: 30 records" in ok.stdout
    path = log_dir / "audit-000001.log"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[16] = lines[16].replace(b'"bob"', b'"eve"')
    path.write_bytes(b"".join(lines))
    bad = cli("verify", "--dir", str(log_dir))
    assert bad.returncode == 1
    assert "first bad record: 17" in bad.stderr and "audit-000001.log line 17" in bad.stderr


def test_verify_with_a_foreign_public_key_fails(log_dir: Path, tmp_path: Path) -> None:
    other = load_or_create_key(tmp_path / "other" / "k.key")
    assert other is not None
    result = cli("verify", "--dir", str(log_dir), "--public-key", str(tmp_path / "other" / "k.pub"))
    assert result.returncode == 1 and "different key" in result.stderr


def query(log_dir: Path, *args: str) -> list[dict]:
    result = cli("query", "--dir", str(log_dir), *args)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_query_filters(log_dir: Path) -> None:
    assert len(query(log_dir)) == 30
    alice = query(log_dir, "--user", "alice")
    assert len(alice) == 10 and {r["rule"] for r in alice} == {"Terminal shell in container"}
    assert [r["seq"] for r in alice][:2] == [1, 4]
    assert len(query(log_dir, "--rule", "container oom")) == 10
    assert len(query(log_dir, "--priority", "warning")) == 20
    assert len(query(log_dir, "--min-priority", "Notice")) == 30
    assert len(query(log_dir, "--unattributed")) == 10
    window = query(log_dir, "--since", "2026-11-27T05:10:00Z", "--until", "2026-11-27T05:19:00Z")
    assert [r["seq"] for r in window] == list(range(11, 21))
    assert len(query(log_dir, "--kind", "engine", "--limit", "3")) == 3
    assert query(log_dir, "--user", "bob", "--kind", "engine") == []
    bad = cli("query", "--dir", str(log_dir), "--priority", "Severe")
    assert bad.returncode == 2 and "priority" in bad.stderr


def test_verify_require_signed_catches_a_deleted_checkpoint_file(log_dir: Path) -> None:
    assert cli("verify", "--dir", str(log_dir), "--require-signed").returncode == 0
    (log_dir / "checkpoints.log").unlink()
    lenient = cli("verify", "--dir", str(log_dir))
    assert lenient.returncode == 0 and "not yet covered by a signed checkpoint" in lenient.stdout
    strict = cli("verify", "--dir", str(log_dir), "--require-signed")
    assert strict.returncode == 1 and "first bad record: 1" in strict.stderr
