"""Per-user user-namespace mappings: one block of host ids per hub user, kept in state.

Why explicit mappings rather than podman's ``--userns=auto`` choosing a free block: auto
picks among the blocks no *existing* container uses. Notebook containers are removed when
they stop, so alice's next server could get the block bob's last one had, while bob's home
volume is still owned by those host ids: alice would own bob's files. Here a user gets a
block once, the first time they spawn, and keeps it for good: the allocation is state
(``engine_root()/userns.json``), written atomically under a lock, and a block is never given
to anyone else, even after its user is gone (their files may still exist).

Block ``i`` of the project's range (:mod:`.subids`) maps container ids ``0..65535`` to host
ids ``start + i*65536 ...``; container uid 1000 is host uid ``start + i*65536 + 1000``, an
id no account on the host owns. The engine receives the block as
``auto:size=65536,uidmapping=0:HOST:65536,gidmapping=0:HOST:65536``: podman's compat API
accepts only a userns *mode*, and auto mode with mappings that cover the whole size uses
exactly those mappings (checked against the project's account in the engine's storage.conf).
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import Misconfigured
from .subids import ACCOUNT, BLOCK, SUBGID, SUBUID, IdRange, SubidRangeMissing, project_range

FORMAT_VERSION = 1


class UsernsStateInvalid(Misconfigured):
    """The allocation file is unreadable or contradicts itself; nothing is allocated."""


@dataclass(frozen=True)
class IdMap:
    """Container ids ``0..size-1`` are host uids and gids ``host_start..``."""

    host_start: int
    size: int = BLOCK

    def to_host(self, container_id: int) -> int:
        if not 0 <= container_id < self.size:
            raise ValueError(f"container id {container_id} is outside the mapping (0..{self.size - 1})")
        return self.host_start + container_id

    @property
    def line(self) -> str:
        """``CONTAINER:HOST:SIZE``, as podman and ``/proc/PID/uid_map`` spell a mapping."""
        return f"0:{self.host_start}:{self.size}"

    def userns_mode(self) -> str:
        """The engine's ``UsernsMode`` for this mapping (pure)."""
        return f"auto:size={self.size},uidmapping={self.line},gidmapping={self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"uid_map": self.line, "gid_map": self.line, "host_start": self.host_start,
                "size": self.size}


def host_range(*, account: str = ACCOUNT, subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdRange:
    """The project's range, the same in /etc/subuid and /etc/subgid (one block serves a
    user's uids and gids alike); raises SubidRangeMissing otherwise."""
    uids = project_range(subuid, account=account)
    gids = project_range(subgid, account=account)
    if uids != gids:
        raise SubidRangeMissing(f"{account}'s ranges differ: uids {uids} in {subuid}, gids {gids} "
                                f"in {subgid}; make them the same")
    return uids


class UserRanges:
    """Allocate and look up users' blocks inside ``host_range`` (uids and gids alike)."""

    def __init__(self, state_path: Path, host_range: IdRange, *, block: int = BLOCK) -> None:
        self.state_path = Path(state_path)
        self.host_range = host_range
        self.block = block
        #: Blocks this process has read or given: a block is a user's for good, so once
        #: known it is answered without the file or its lock.
        self._known: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        return self.host_range.count // self.block

    def lookup(self, user: str) -> IdMap | None:
        """The user's block if they have one (no write)."""
        slot = self._known.get(user)
        if slot is None:
            slot = self._load().get(user)
        if slot is None:
            return None
        self._known[user] = slot
        return self._map(slot)

    def known(self, user: str) -> IdMap | None:
        """The user's block if this process has seen it already (no file access)."""
        slot = self._known.get(user)
        return None if slot is None else self._map(slot)

    def allocate(self, user: str) -> IdMap:
        """The user's block, given now if they have none (atomic, under an exclusive lock)."""
        if not user:
            raise ValueError("a block needs a user name")
        if user in self._known:
            return self._map(self._known[user])
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self._load()
            slot = users.get(user)
            if slot is None:
                slot = next_free(users.values(), capacity=self.capacity)
                users[user] = slot
                atomic_write(self.state_path, self._dump(users), mode=0o600)
        self._known[user] = slot
        return self._map(slot)

    def _map(self, slot: int) -> IdMap:
        return IdMap(host_start=self.host_range.start + slot * self.block, size=self.block)

    def _dump(self, users: dict[str, int]) -> bytes:
        doc = {"version": FORMAT_VERSION, "range": {"start": self.host_range.start,
                                                    "count": self.host_range.count},
               "block": self.block, "users": dict(sorted(users.items()))}
        return (json.dumps(doc, indent=1) + "\n").encode()

    def _load(self) -> dict[str, int]:
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsernsStateInvalid(f"{self.state_path}: {exc.strerror}") from None
        return parse_state(raw, where=str(self.state_path), host_range=self.host_range,
                           block=self.block)


def next_free(taken: Any, *, capacity: int) -> int:
    """The lowest block number nobody holds (pure)."""
    used = set(taken)
    for slot in range(capacity):
        if slot not in used:
            return slot
    raise UsernsStateInvalid(f"all {capacity} user-namespace blocks are given out: widen the range")


def parse_state(raw: bytes, *, where: str, host_range: IdRange, block: int) -> dict[str, int]:
    """users -> block from the state file (pure); raises UsernsStateInvalid on anything odd.

    The range and block size are recorded: reading the file against another range would
    hand out ids that overlap blocks already given, so that is refused, not adapted.
    """
    try:
        doc = json.loads(raw)
        version, users = doc["version"], doc["users"]
        recorded = IdRange(int(doc["range"]["start"]), int(doc["range"]["count"]))
        recorded_block = int(doc["block"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsernsStateInvalid(f"{where} is not a user-namespace allocation file ({exc!r})") from None
    if version != FORMAT_VERSION:
        raise UsernsStateInvalid(f"{where}: version {version!r}, expected {FORMAT_VERSION}")
    if recorded != host_range or recorded_block != block:
        raise UsernsStateInvalid(
            f"{where} was written for host ids {recorded} in blocks of {recorded_block}, but the "
            f"project's range is now {host_range} in blocks of {block}: restore the old range in "
            "/etc/subuid and /etc/subgid (users' files are owned by ids from it)"
        )
    if not isinstance(users, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in users.items()):
        raise UsernsStateInvalid(f"{where}: users must map names to block numbers")
    slots = list(users.values())
    capacity = host_range.count // block
    if len(set(slots)) != len(slots) or any(not 0 <= s < capacity for s in slots):
        raise UsernsStateInvalid(f"{where}: two users share a block, or a block is out of range")
    return dict(users)
