"""Whether a home volume still needs podman's ownership walk (the ``U`` volume option).

Why: ``U`` makes the engine chown the whole volume to the container user's host ids (the
user's block, :mod:`.userns`) at *every* start: one ``lstat`` per file a user ever kept,
inside the spawn. Once a walk has run, it cannot be needed again for the same volume and
owner: from then on only three things write the volume, and none can give a file an id
outside the user's block. The user's containers run inside the block's user namespace
(an unprivileged process there can only create files owned by ids the block maps, and
chown needs a capability the containers drop); the engine copies the image's home into an
empty volume once, at its first start (which walks); the hub only changes the top
directory's mode. So a volume recorded as walked into this block, whose top directory still
has the owner the walk gave it and whose first-level entries carry ids of the block, starts
without ``U``. Anything else (no record, a record for another block or an earlier volume of
the same name, a top-level entry with foreign ownership, e.g. copied in by an admin) keeps
``U`` and the walk repairs it. (The walk's owner is read back, not computed: the engine
picks the group from the image's account, while the notebook's files carry its own group.)

The record is state (beside the user-namespace allocation it depends on), keyed by volume
name and the engine's creation time of the volume, so a volume deleted and made again
under the same name is walked again.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Block:
    """The host ids a user's files may carry: their user-namespace block (``start`` ..
    ``start + size - 1``); without user namespaces, every host id."""

    start: int = 0
    size: int = 2**32

    def holds(self, st: os.stat_result) -> bool:
        return (self.start <= st.st_uid < self.start + self.size
                and self.start <= st.st_gid < self.start + self.size)


def top_settled(path: Path, *, owner: tuple[int, int], block: Block) -> bool:
    """Whether ``path`` is owned by ``owner`` (uid, gid) and every entry directly in it
    (symlinks not followed) by ids of ``block``; False when ``path`` cannot be read."""
    try:
        top = os.lstat(path)
        with os.scandir(path) as entries:
            stats = [entry.stat(follow_symlinks=False) for entry in entries]
    except OSError:
        return False
    return (top.st_uid, top.st_gid) == owner and block.holds(top) and all(block.holds(st) for st in stats)


class HomeOwners:
    """The record of walked home volumes (``volume -> created, block, uid, gid``)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = Path(state_path)

    def settled(self, *, volume: str, created: str, path: Path, block: Block) -> bool:
        """True when ``volume`` (made at ``created``) needs no walk into ``block``."""
        entry = self._load().get(volume)
        if not isinstance(entry, dict) or entry.get("created") != created \
                or entry.get("block") != [block.start, block.size]:
            return False
        uid, gid = entry.get("uid"), entry.get("gid")
        if not isinstance(uid, int) or not isinstance(gid, int):
            return False
        return top_settled(path, owner=(uid, gid), block=block)

    def record(self, *, volume: str, created: str, path: Path, block: Block) -> bool:
        """After a start with ``U`` succeeded: record the owner the walk gave the top
        directory (forget the volume if that owner is outside ``block``); True if recorded."""
        try:
            top = os.lstat(path)
        except OSError:
            top = None
        if top is None or not block.holds(top):
            self._update(volume, None)
            return False
        self._update(volume, {"created": created, "block": [block.start, block.size],
                              "uid": top.st_uid, "gid": top.st_gid})
        return True

    def forget(self, volume: str) -> None:
        self._update(volume, None)

    def _update(self, volume: str, entry: dict[str, Any] | None) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            volumes = self._load()
            if entry is None:
                volumes.pop(volume, None)
            else:
                volumes[volume] = entry
            doc = {"version": FORMAT_VERSION, "volumes": dict(sorted(volumes.items()))}
            atomic_write(self.state_path, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o600)

    def _load(self) -> dict[str, Any]:
        """The record; an unreadable or foreign file counts as empty (every volume is then
        walked, which is always safe)."""
        try:
            doc = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION \
                or not isinstance(doc.get("volumes"), dict):
            return {}
        return dict(doc["volumes"])
