"""The revocation list's journal: a revocation, once recorded, survives every crash point
(torn append, compaction cut short) and is seen by every other reader."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from jovial_guard.credentials import revocation
from jovial_guard.credentials.errors import CredentialError
from jovial_guard.credentials.revocation import Revocation, RevocationList

NOW = 1_764_230_400


def rev(i: int, reason: str = "replaced") -> Revocation:
    return Revocation(f"{i:032x}", "alice", reason, NOW + i)


def serials(rl: RevocationList) -> set[str]:
    return {r.serial for r in rl.all()}


def test_append_is_seen_by_another_reader_without_rewriting_the_base(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    writer, reader = RevocationList(path), RevocationList(path)
    writer.add([rev(1)])
    assert reader.get(rev(1).serial) == rev(1)
    writer.add([rev(2)])
    assert reader.get(rev(2).serial) == rev(2)
    assert not path.exists()  # no compaction yet: nothing but the journal was written


def test_earlier_record_wins(tmp_path: Path) -> None:
    rl = RevocationList(tmp_path / "revoked.json")
    rl.add([rev(1, "audit")])
    rl.add([rev(1, "later")])
    assert RevocationList(tmp_path / "revoked.json").get(rev(1).serial) == rev(1, "audit")


def test_torn_last_line_is_ignored_then_merged_away(tmp_path: Path) -> None:
    """A crash mid-append: the unterminated line was never acknowledged."""
    path = tmp_path / "revoked.json"
    rl = RevocationList(path)
    rl.add([rev(1)])
    with open(rl.journal, "ab") as handle:
        handle.write(b'{"serial": "' + b"f" * 20)
    reader = RevocationList(path)
    assert serials(reader) == {rev(1).serial}
    rl.add([rev(2)])
    assert serials(reader) == serials(RevocationList(path)) == {rev(1).serial, rev(2).serial}
    assert rl.journal.read_bytes() == rl.journal.read_bytes().split(b"\n", 1)[0] + b"\n"  # one whole line
    assert rev(1).serial in json.loads(path.read_bytes())["revoked"]


@pytest.mark.parametrize("line", [b"not json\n", b'{"v": 2, "serial": "x", "user": "a", "reason": "r", "at": 1}\n',
                                  b'{"v": 1, "serial": "x"}\n', b"[1]\n"])
def test_corrupt_complete_line_fails_closed(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "revoked.json"
    RevocationList(path).add([rev(1)])
    with open(path.with_name("revoked.json.journal"), "ab") as handle:
        handle.write(line)
    with pytest.raises(CredentialError, match="refusing all grants"):
        RevocationList(path)


def test_compaction_moves_everything_into_the_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocation, "COMPACT_AT", 5)
    path = tmp_path / "revoked.json"
    rl, reader = RevocationList(path), RevocationList(path)
    for i in range(12):
        rl.add([rev(i)])
        assert reader.get(rev(i).serial) == rev(i)
    assert len(json.loads(path.read_bytes())["revoked"]) == 10
    assert rl.journal.read_bytes().count(b"\n") == 2
    assert serials(RevocationList(path)) == {rev(i).serial for i in range(12)}


def test_compaction_cut_short_keeps_every_revocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash after the new base, before the journal is emptied: entries in both files."""
    path = tmp_path / "revoked.json"
    rl = RevocationList(path)
    rl.add([rev(1), rev(2)])
    journal = rl.journal.read_bytes()
    rl.discard({rev(2).serial})  # compacts: base without rev(2), journal emptied
    rl.journal.write_bytes(journal)  # ... as if the crash came before the emptying
    again = RevocationList(path)
    assert again.get(rev(1).serial) == rev(1)
    assert again.get(rev(2).serial) is not None  # a discard undone by a crash errs on "revoked"


def test_discard_forgets(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    rl = RevocationList(path)
    rl.add([rev(1), rev(2)])
    rl.discard({rev(1).serial})
    assert serials(RevocationList(path)) == {rev(2).serial}


def test_concurrent_writers_with_compaction_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Separate instances lock like separate processes (flock per open file)."""
    monkeypatch.setattr(revocation, "COMPACT_AT", 7)
    path = tmp_path / "revoked.json"
    lists = [RevocationList(path) for _ in range(4)]
    seen_missing: list[str] = []

    def writer(k: int) -> None:
        for i in range(30):
            entry = rev(k * 100 + i)
            lists[k].add([entry])
            if lists[(k + 1) % 4].get(entry.serial) is None:
                seen_missing.append(entry.serial)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen_missing == []
    assert len(RevocationList(path).all()) == 120
