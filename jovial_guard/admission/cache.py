"""Decision cache keyed by (workload digest, policy revision), cleared on every policy change.

Why: a spawn storm (200 students at 9:00) and the API server's own habits (the mutating
webhook may be reinvoked, controllers re-send the same pod template, retries after a
conflict) ask the same question many times. The answer depends only on the normalized
workload and the policy set, so ``(Workload.digest(), revision)`` is a complete key.

Invalidation: the :class:`RevisionTracker` learns the revision OPA serves (by polling it
and from every decision's ``revision``); whenever it changes, the whole cache is dropped.
Entries also expire after ``ttl`` seconds as a second line of defence against a data change
that did not bump the revision. Only decisions that came from OPA are cached; fail-closed
denials (OPA down, deadline) never are, so recovery is immediate.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..policy.client import encode_input
from ..policy.engine import UNVERSIONED, UNVERSIONED_HELP
from ..workload import Workload

V = TypeVar("V")


def workload_key(workload: Workload) -> str:
    """The cache key of a workload: SHA-256 of its canonical OPA input (the whole
    ``to_input()`` document with sorted keys, as :func:`encode_input` makes it)."""
    return input_key(encode_input(workload.to_input()))


def input_key(input_json: bytes) -> str:
    """The cache key of an already encoded input: the same bytes OPA is asked about."""
    return "o:" + hashlib.sha256(input_json).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0


class DecisionCache(Generic[V]):
    """A bounded LRU with per-entry expiry; values are whatever the caller stores."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1, e.g. 10000")
        if ttl <= 0:
            raise ValueError("ttl must be positive seconds, e.g. 300")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._revision: str | None = None
        self.stats = CacheStats()

    @property
    def revision(self) -> str | None:
        """The policy revision every entry belongs to."""
        return self._revision

    def set_revision(self, revision: str | None) -> None:
        """Adopt the revision OPA serves; a change drops every entry."""
        if revision != self._revision:
            self._data.clear()
            self._revision = revision
            self.stats.invalidations += 1

    def get(self, key: Hashable, *, revision: str | None) -> V | None:
        if revision is None or revision != self._revision:
            self.stats.misses += 1
            return None
        item = self._data.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        expires, value = item
        if expires < self._clock():
            del self._data[key]
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: Hashable, value: V, *, revision: str | None) -> None:
        """Store under the current revision only; a stale-revision answer is dropped.

        Nothing is stored for unversioned policies: a change to them would not change the
        revision, so a cached answer could outlive the policy that gave it.
        """
        if revision is None or revision == UNVERSIONED or revision != self._revision:
            return
        self._data[key] = (self._clock() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
        self.stats.invalidations += 1

    def __len__(self) -> int:
        return len(self._data)


class RevisionTracker:
    """What policy revision OPA serves right now, and whether it is the expected one.

    ``observe()`` is fed by a poller (``PolicyEngine.revision()``) and by every decision.
    Listeners (the cache) hear about every change.
    """

    def __init__(self, *, expected: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.expected = expected
        self.current: str | None = None
        self.last_seen: float | None = None
        self.last_error: str | None = None
        self._clock = clock
        self._listeners: list[Callable[[str | None], Any]] = []

    def subscribe(self, listener: Callable[[str | None], Any]) -> None:
        self._listeners.append(listener)

    def observe(self, revision: str | None, *, error: str | None = None) -> None:
        """Record what OPA said (``None`` with ``error`` when it could not say)."""
        self.last_error = error
        if revision is not None:
            self.last_seen = self._clock()
        if revision != self.current:
            self.current = revision
            for listener in self._listeners:
                listener(revision)

    def ready(self, *, max_age: float) -> tuple[bool, str]:
        """Ready means: OPA answered recently, with a revision (the expected one if set).

        Policies without a revision (OPA started by hand on a directory, or a bundle not
        activated yet) are served, but not ready: nobody could tell which policy decided.
        """
        if self.current == UNVERSIONED:
            return False, UNVERSIONED_HELP
        if self.current is None or self.last_seen is None:
            return False, f"policy engine has not reported a revision ({self.last_error or 'not asked yet'})"
        age = self._clock() - self.last_seen
        if age > max_age:
            return False, f"policy engine last answered {age:.1f}s ago"
        if self.expected is not None and self.current != self.expected:
            return False, f"policy engine serves revision {self.current}, expected {self.expected}"
        return True, f"policy revision {self.current}"
