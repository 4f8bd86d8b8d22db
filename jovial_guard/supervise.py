"""Keep the embedded stack's processes running: restart on exit, with backoff, logged.

Why: the embedded hub depends on processes that can die on their own (OPA, podman's Docker
API service). While one is gone every spawn is refused, which is correct (fail closed),
but only a restart ends the outage. One watcher thread per child polls ``alive()``; on exit
it logs, waits the next backoff step and calls ``restart()``. A child that stays up for
``stable_after`` seconds gets its backoff reset, so a crash loop slows down and a rare
crash is repaired within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import JovialGuardError

Log = Callable[[str], None]

#: Seconds to wait before restart attempt 1, 2, 3, ...; the last value repeats.
DEFAULT_BACKOFF: tuple[float, ...] = (0.2, 1.0, 2.0, 5.0, 10.0, 30.0)


class Restartable(Protocol):
    """What the supervisor needs of a child process wrapper."""

    def alive(self) -> bool: ...

    def restart(self) -> None:
        """Clean up what the dead process left and start it again; ready when it returns."""
        ...


@dataclass
class ChildStatus:
    """What the supervisor knows of one child (read by tests and ``up``)."""

    name: str
    restarts: int = 0
    last_exit: float | None = None
    last_error: str = ""
    history: list[str] = field(default_factory=list)


class Supervisor:
    """Watch named children and restart each one that exits; ``stop()`` ends the watch."""

    def __init__(
        self,
        children: Sequence[tuple[str, Restartable]],
        *,
        log: Log,
        interval: float = 0.25,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        stable_after: float = 60.0,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay, e.g. (0.2, 1.0, 5.0)")
        self._children = list(children)
        self._log = log
        self._interval = interval
        self._backoff = tuple(backoff)
        self._stable_after = stable_after
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.status: dict[str, ChildStatus] = {name: ChildStatus(name) for name, _ in self._children}

    def start(self) -> Supervisor:
        for name, child in self._children:
            thread = threading.Thread(target=self._watch, args=(name, child),
                                      name=f"supervise-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop watching (call before stopping the children, so none is restarted)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _watch(self, name: str, child: Restartable) -> None:
        status = self.status[name]
        failures = 0
        up_since = time.monotonic()
        while not self._stopping.wait(self._interval):
            if child.alive():
                if failures and time.monotonic() - up_since >= self._stable_after:
                    failures = 0
                continue
            status.last_exit = time.time()
            delay = self._backoff[min(failures, len(self._backoff) - 1)]
            failures += 1
            self._note(status, f"{name} exited; restarting in {delay:g}s (attempt {failures})")
            if self._stopping.wait(delay):
                return
            try:
                child.restart()
            except (JovialGuardError, OSError) as exc:
                status.last_error = str(exc)
                self._note(status, f"{name} restart failed: {exc}")
                continue
            status.restarts += 1
            up_since = time.monotonic()
            self._note(status, f"{name} restarted (restart {status.restarts})")

    def _note(self, status: ChildStatus, message: str) -> None:
        status.history.append(message)
        del status.history[:-50]
        try:
            self._log(message)
        except Exception:  # noqa: BLE001 - a broken log sink must not end supervision
            pass
