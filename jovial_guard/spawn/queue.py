"""`StartQueue`: how many servers start at once, first come first served, and who is next.

Why a queue of our own: each notebook server needs a few CPU-seconds to start, so when a
whole class presses "Start" at once on a small machine every start slows every other one
until the first pass their timeouts. JupyterHub's own ``concurrent_spawn_limit`` answers the
surplus with 429 and asks the user to come back later; here the surplus waits in order, and
each waiting user is told how many are ahead (the spawn page shows the spawner's progress
events). A slot is held from the moment a spawn's turn comes until its server answers on
its port (or the spawn ends some other way), so ``slots`` servers at most are starting.

One queue per hub process, used on the hub's event loop only (no locks: asyncio).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(eq=False)
class Ticket:
    """One spawn's place: waiting (``granted`` unset), starting (set), or done (``released``)."""

    key: str
    queued_at: float = field(default_factory=time.monotonic)
    granted: asyncio.Event = field(default_factory=asyncio.Event)
    released: bool = False
    started_at: float | None = None

    @property
    def waited(self) -> float:
        """Seconds spent waiting for a slot (so far, if still waiting)."""
        end = self.started_at if self.started_at is not None else time.monotonic()
        return end - self.queued_at


class StartQueue:
    """``slots`` starts at a time; the others wait in arrival order.

    ``max_hold`` bounds how long one spawn may keep a slot (a spawn whose end was never
    reported must not block the queue forever).
    """

    def __init__(self, slots: int, *, max_hold: float = 600.0) -> None:
        if slots < 1:
            raise ValueError(f"a start queue needs at least one slot, got {slots!r}")
        self.slots = slots
        self.max_hold = max_hold
        self._waiting: list[Ticket] = []
        self._holding: dict[Ticket, asyncio.TimerHandle | None] = {}
        self._changed = asyncio.Event()

    # -- queries ------------------------------------------------------------------------
    def ahead_of(self, ticket: Ticket) -> int | None:
        """How many spawns wait before ``ticket`` (None: it is not waiting)."""
        try:
            return self._waiting.index(ticket)
        except ValueError:
            return None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def starting(self) -> int:
        return len(self._holding)

    # -- one spawn ----------------------------------------------------------------------
    def enter(self, key: str) -> Ticket:
        """A new place for spawn ``key``, granted at once when a slot is free and nobody waits."""
        ticket = Ticket(key)
        self._waiting.append(ticket)
        self._grant()
        return ticket

    async def wait(self, ticket: Ticket) -> None:
        """Until ``ticket``'s turn; cancelling the wait gives its place (or slot) up."""
        try:
            await ticket.granted.wait()
        except BaseException:
            self.release(ticket)
            raise

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s spawn is over (server up, failed or stopped): free its place or
        slot for the next one. Idempotent."""
        if ticket.released:
            return
        ticket.released = True
        if ticket in self._waiting:
            self._waiting.remove(ticket)
        timer = self._holding.pop(ticket, None)
        if timer is not None:
            timer.cancel()
        self._grant()

    async def positions(self, ticket: Ticket) -> AsyncIterator[int]:
        """The number of spawns ahead of ``ticket`` each time it changes, while it waits."""
        last: int | None = None
        while True:
            ahead = self.ahead_of(ticket)
            if ahead is None:
                return
            if ahead != last:
                last = ahead
                yield ahead
            changed = self._changed
            await changed.wait()

    # -- internals ------------------------------------------------------------------------
    def _grant(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._holding) < self.slots:
            ticket = self._waiting.pop(0)
            ticket.started_at = time.monotonic()
            self._holding[ticket] = loop.call_later(self.max_hold, self.release, ticket)
            ticket.granted.set()
        # Wake every watcher, then give later ones a fresh event to wait on.
        self._changed.set()
        self._changed = asyncio.Event()
