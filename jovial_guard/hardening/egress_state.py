"""What the egress namespaces remember between calls and processes: one JSON file per
namespace (its link index, addresses) under a state directory, and the lock every writer
takes. Files are replaced atomically (:func:`jovial_guard.atomic.atomic_write`), so a reader
never sees a torn record.
"""

from __future__ import annotations

import fcntl
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..atomic import atomic_write


class StateStore:
    """``<state_dir>/<namespace>.json`` records and ``<state_dir>/.lock``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def names(self, prefix: str = "") -> list[str]:
        """Namespaces with a record (whose names start with ``prefix``)."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob(f"{glob.escape(prefix)}*.json"))

    def read(self, name: str) -> dict[str, object] | None:
        try:
            doc = json.loads((self.state_dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def all(self, prefix: str = "") -> Iterator[dict[str, object]]:
        for name in self.names(prefix):
            state = self.read(name)
            if state is not None:
                yield state

    def write(self, name: str, state: dict[str, object]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Kept in /run (gone at reboot, like the namespaces): atomic, no fsync needed.
        atomic_write(self.state_dir / f"{name}.json", json.dumps(state, sort_keys=True).encode(),
                     mode=0o644, durable=False)

    def forget(self, name: str) -> None:
        (self.state_dir / f"{name}.json").unlink(missing_ok=True)

    def lock(self) -> FileLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.state_dir / ".lock")

    def remove_if_empty(self) -> None:
        if self.names():
            return
        (self.state_dir / ".lock").unlink(missing_ok=True)
        try:
            self.state_dir.rmdir()
        except OSError:
            pass  # another process recreated state meanwhile: leave it


class FileLock:
    """An exclusive ``flock`` on ``path``: one writer of the namespaces at a time, across
    processes (the hub, the CLI, tests) and threads (each takes its own open file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> None:
        fh = open(self.path, "w")
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._fh = fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
