"""The supervisor restarts a child that exits, backs off when restarts fail, and stops."""

from __future__ import annotations

import threading
import time

from jovial_guard.errors import JovialGuardError
from jovial_guard.supervise import Supervisor


class Child:
    """A stand-in child process: ``die()`` ends it; restarts fail ``failures`` times first."""

    def __init__(self, failures: int = 0) -> None:
        self.running = True
        self.failures = failures
        self.restart_times: list[float] = []
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.running

    def die(self) -> None:
        self.running = False

    def restart(self) -> None:
        with self.lock:
            self.restart_times.append(time.monotonic())
            if self.failures:
                self.failures -= 1
                raise JovialGuardError("port still busy")
            self.running = True


def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_a_child_that_exits_is_restarted_and_logged() -> None:
    child, log = Child(), []
    sup = Supervisor([("opa", child)], log=log.append, interval=0.01, backoff=(0.01,)).start()
    try:
        child.die()
        _wait(lambda: child.running and sup.status["opa"].restarts == 1)
    finally:
        sup.stop()
    assert log == ["opa exited; restarting in 0.01s (attempt 1)", "opa restarted (restart 1)"]


def test_failed_restarts_back_off_and_are_retried() -> None:
    child, log = Child(failures=2), []
    sup = Supervisor([("engine", child)], log=log.append, interval=0.01, backoff=(0.01, 0.2, 0.4)).start()
    try:
        child.die()
        _wait(lambda: child.running)
    finally:
        sup.stop()
    gaps = [b - a for a, b in zip(child.restart_times, child.restart_times[1:])]
    assert len(child.restart_times) == 3
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4
    assert "engine restart failed: port still busy" in log
    assert sup.status["engine"].last_error == "port still busy"


def test_stop_ends_supervision_before_children_are_stopped() -> None:
    child, log = Child(), []
    sup = Supervisor([("opa", child)], log=log.append, interval=0.01, backoff=(0.01,)).start()
    sup.stop()
    child.die()
    time.sleep(0.1)
    assert not child.running and child.restart_times == [] and log == []


def test_a_log_sink_that_raises_does_not_end_supervision() -> None:
    child = Child()

    def broken(message: str) -> None:
        raise OSError("disk full")

    sup = Supervisor([("opa", child)], log=broken, interval=0.01, backoff=(0.01,)).start()
    try:
        child.die()
        _wait(lambda: child.running)
        child.die()
        _wait(lambda: child.running and sup.status["opa"].restarts == 2)
    finally:
        sup.stop()
