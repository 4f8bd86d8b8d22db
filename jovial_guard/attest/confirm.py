"""A drift is reported only when it survives a second look.

``exec`` into a container starts the runtime's init process (runc's ``runc:[2:INIT]``), which
joins the container's namespaces and cgroup before it sets NoNewPrivs, drops its
capabilities and loads the seccomp filter, and only then runs the command. For that moment a
legitimate process looks exactly like one entered with ``nsenter``, and a drift would make
the audit response stop a healthy server. So a pass that sees drift looks again after each
of :data:`RECHECK_DELAYS` and keeps only the drifts seen every time (the same process with
the same values; mounts, limits and rulesets compare by value). An intruder that stays is
reported that much later; one that lives shorter than the delays was as likely to fall
between two periodic passes anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .compare import Drift, compare
from .expect import Expected
from .observe import ContainerGone, Observation

#: Seconds before each further look (a runtime's init needs milliseconds; slack for load).
RECHECK_DELAYS = (0.2, 0.5)


def confirmed(first: list[Drift], look_again: Callable[[], list[Drift] | None], *,
              delays: Sequence[float] = RECHECK_DELAYS,
              sleep: Callable[[float], None] = time.sleep) -> list[Drift]:
    """The drifts of ``first`` that ``look_again`` also reports after every delay, sorted.

    ``look_again`` returns ``None`` when the container is gone: nothing is left to report.
    """
    kept = set(first)
    for delay in delays:
        if not kept:
            break
        sleep(delay)
        again = look_again()
        if again is None:
            return []
        kept &= set(again)
    return sorted(kept)


def looking_again(expected: Expected, observe: Callable[[], Observation]) -> Callable[[], list[Drift] | None]:
    """The ``look_again`` of :func:`confirmed`: a new observation compared with ``expected``;
    None when the container has gone meanwhile."""
    def look_again() -> list[Drift] | None:
        try:
            return compare(expected, observe())
        except ContainerGone:
            return None

    return look_again
