"""Wall time of each step of one pre-spawn hook call, for the hub log.

Why: the hook's total (``hook_ms``) says how long a spawn waited for the guard, not where
the time went. Each step (decision, user namespace, render, namespace and storage, the
decision listeners, the spawn listeners) is timed on the same clock and logged beside the
total, so a slow spawn in a hub log shows its slow step without a profiler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StepClock:
    """Milliseconds per named step, in the order the steps ran (a repeated name adds up)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.ms: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = self._clock()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (self._clock() - started) * 1000

    def line(self) -> str:
        """``decide:9.1,userns:0.3,...`` (one decimal; empty when nothing was timed)."""
        return ",".join(f"{name}:{ms:.1f}" for name, ms in self.ms.items())
