"""A drift counts only when every further look sees it again (jovial_guard.attest.confirm)."""

from __future__ import annotations

from collections.abc import Callable

from jovial_guard.attest.compare import Drift
from jovial_guard.attest.confirm import confirmed

INIT = Drift("seccomp", "pid 41 (runc:[2:INIT]): Seccomp 0, 0 filter(s); expected mode 2 with a filter")
INTRUDER = Drift("seccomp", "pid 77 (sh): Seccomp 0, 0 filter(s); expected mode 2 with a filter")
REMOUNT = Drift("mount", "/ is mounted read-write (mount point /)")


def looks(*answers: list[Drift] | None) -> tuple[list[float], Callable[[], list[Drift] | None]]:
    slept: list[float] = []
    queue = list(answers)

    def look_again() -> list[Drift] | None:
        return queue.pop(0)

    return slept, look_again


def test_no_drift_costs_no_second_look() -> None:
    slept: list[float] = []

    def never() -> list[Drift] | None:
        raise AssertionError("looked again without a drift")

    assert confirmed([], never, sleep=slept.append) == []
    assert slept == []


def test_a_runtime_init_gone_on_the_second_look_is_not_drift() -> None:
    slept, again = looks([])
    assert confirmed([INIT], again, delays=(0.2, 0.5), sleep=slept.append) == []
    assert slept == [0.2]


def test_what_stays_through_every_look_is_reported() -> None:
    slept, again = looks([INTRUDER, REMOUNT], [REMOUNT, INTRUDER])
    assert confirmed([INIT, INTRUDER, REMOUNT], again, delays=(0.2, 0.5), sleep=slept.append) == sorted([INTRUDER, REMOUNT])
    assert slept == [0.2, 0.5]


def test_a_drift_missing_from_any_look_is_dropped() -> None:
    slept, again = looks([INTRUDER], [])
    assert confirmed([INTRUDER], again, delays=(0.2, 0.5), sleep=slept.append) == []


def test_a_container_gone_meanwhile_reports_nothing() -> None:
    slept, again = looks(None)
    assert confirmed([INTRUDER], again, delays=(0.2, 0.5), sleep=slept.append) == []
