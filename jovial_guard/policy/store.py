"""The policy store: every revision ever deployed, which one is current, and who did what.

Layout under ``root``::

    keys/                      the bundle signing key pair (signing.key is 0600)
    revisions/<rev>/src/       the policy directory as deployed (for diff and rollback)
    revisions/<rev>/bundle.tar.gz   the signed bundle OPA loads
    current                    the active revision (replaced atomically)
    history.jsonl              append-only, hash-chained log of deploys and rollbacks

The bundle server serves ``current``'s bundle; OPA swaps it in atomically.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import Misconfigured
from .bundles import SigningKey, build_bundle, verify_bundle
from .opa_process import policy_files, policy_revision

GENESIS = "0" * 64


class StoreError(Misconfigured):
    """The store is missing a revision, or its history does not verify."""


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    time: float
    actor: str
    action: str
    revision: str
    previous: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class PolicyStore:
    """Revisions, the current pointer and the history of one policy deployment."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "revisions").mkdir(parents=True, exist_ok=True)
        self.key = SigningKey.load_or_create(self.root / "keys")

    # --- revisions ------------------------------------------------------------------

    def revision_dir(self, revision: str) -> Path:
        safe = revision.replace(":", "-")
        return self.root / "revisions" / safe

    def bundle_path(self, revision: str) -> Path:
        return self.revision_dir(revision) / "bundle.tar.gz"

    def source_dir(self, revision: str) -> Path:
        return self.revision_dir(revision) / "src"

    def add(self, policy_dir: Path) -> str:
        """Snapshot ``policy_dir`` as a revision with a signed bundle (idempotent)."""
        revision = policy_revision(policy_dir)
        target = self.revision_dir(revision)
        if not self.bundle_path(revision).exists():
            staging = target.with_name(target.name + ".staging")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            shutil.copytree(policy_dir, staging / "src", ignore=shutil.ignore_patterns("__pycache__", ".*"))
            build_bundle(staging / "src", staging / "bundle.tar.gz", key=self.key, revision=revision)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        return revision

    def has(self, revision: str) -> bool:
        return self.bundle_path(revision).is_file()

    def revisions(self) -> list[str]:
        return sorted({e.revision for e in self.history()})

    # --- the current pointer -----------------------------------------------------------

    def current(self) -> str | None:
        try:
            return (self.root / "current").read_text().strip() or None
        except FileNotFoundError:
            return None

    def activate(self, revision: str) -> None:
        """Point ``current`` at a revision whose bundle verifies; refuse anything else."""
        if not self.has(revision):
            raise StoreError(f"no revision {revision} in the store; see `jovial-guard policy history`")
        verify_bundle(self.bundle_path(revision), key=self.key)
        atomic_write(self.root / "current", revision.encode())

    def current_bundle(self) -> tuple[str, bytes] | None:
        """(revision, signed bundle bytes) of the active revision (verified when activated)."""
        revision = self.current()
        if revision is None:
            return None
        return revision, self.bundle_bytes(revision)

    def bundle_bytes(self, revision: str) -> bytes:
        """The signed bundle of ``revision`` (verified when it was activated)."""
        return self.bundle_path(revision).read_bytes()

    # --- history -----------------------------------------------------------------------

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    def history(self) -> list[HistoryEntry]:
        """All entries, after checking the hash chain (raises StoreError on any edit)."""
        entries: list[HistoryEntry] = []
        prev = GENESIS
        if not self.history_path.exists():
            return entries
        for lineno, line in enumerate(self.history_path.read_text().splitlines(), start=1):
            try:
                doc = json.loads(line)
                entry = HistoryEntry(**doc)
            except (json.JSONDecodeError, TypeError) as exc:
                raise StoreError(f"history line {lineno} is malformed: {exc}") from exc
            if entry.prev_hash != prev or _entry_hash(doc) != entry.hash:
                raise StoreError(f"history line {lineno} does not verify: the history was edited")
            entries.append(entry)
            prev = entry.hash
        return entries

    def record(self, action: str, revision: str, *, previous: str | None, details: dict[str, Any], actor: str | None = None) -> HistoryEntry:
        entries = self.history()
        doc: dict[str, Any] = {
            "seq": len(entries) + 1,
            "time": time.time(),
            "actor": actor or os.environ.get("JOVIAL_GUARD_ACTOR") or getpass.getuser(),
            "action": action,
            "revision": revision,
            "previous": previous,
            "details": details,
            "prev_hash": entries[-1].hash if entries else GENESIS,
        }
        doc["hash"] = _entry_hash(doc)
        with open(self.history_path, "a") as fh:
            fh.write(json.dumps(doc, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return HistoryEntry(**doc)

    # --- diff --------------------------------------------------------------------------

    def diff(self, rev_a: str, rev_b: str) -> Iterator[str]:
        """Unified diff of the policy files (Rego and data) of two revisions."""
        a_dir, b_dir = self.source_dir(rev_a), self.source_dir(rev_b)
        for rev, path in ((rev_a, a_dir), (rev_b, b_dir)):
            if not path.is_dir():
                raise StoreError(f"no revision {rev} in the store")
        yield from diff_dirs(a_dir, b_dir, label_a=rev_a, label_b=rev_b)


def diff_dirs(a_dir: Path, b_dir: Path, *, label_a: str, label_b: str) -> Iterator[str]:
    names = sorted({p.relative_to(a_dir).as_posix() for p in policy_files(a_dir)} | {p.relative_to(b_dir).as_posix() for p in policy_files(b_dir)})
    for name in names:
        a = (a_dir / name).read_text().splitlines(keepends=True) if (a_dir / name).exists() else []
        b = (b_dir / name).read_text().splitlines(keepends=True) if (b_dir / name).exists() else []
        yield from difflib.unified_diff(a, b, fromfile=f"{label_a}/{name}", tofile=f"{label_b}/{name}")


def _entry_hash(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
