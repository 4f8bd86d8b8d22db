"""The hook's step clock: each step's wall time, in order, repeated names added up."""

from __future__ import annotations

import pytest

from jovial_guard.spawn.steps import StepClock


def test_steps_are_timed_in_order_and_a_failing_step_still_counts() -> None:
    ticks = iter([0.0, 0.0121, 1.0, 1.0004, 2.0, 2.5, 3.0, 3.25])
    clock = StepClock(clock=lambda: next(ticks))
    with clock.step("decide"):
        pass
    with clock.step("render"):
        pass
    with pytest.raises(RuntimeError), clock.step("apply"):
        raise RuntimeError("namespace failed")
    with clock.step("render"):
        pass
    assert clock.line() == "decide:12.1,render:250.4,apply:500.0"
    assert StepClock().line() == ""
