"""The spawner returns once the server listens, and stops waiting when the container stopped."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from jovial_guard.spawn.spawner import GuardedDockerSpawner


class _Spawner(GuardedDockerSpawner):
    """The engine's answer to ``poll()`` given by the test (None: running)."""

    exit_status: Any = None

    async def poll(self) -> Any:
        return self.exit_status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_wait_ends_when_the_server_starts_listening() -> None:
    port = _free_port()

    async def scenario() -> tuple[bool, float]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        async def listen_later() -> None:
            await asyncio.sleep(0.4)
            listener.bind(("127.0.0.1", port))
            listener.listen()

        later = asyncio.ensure_future(listen_later())
        started = time.monotonic()
        try:
            up = await _Spawner()._wait_listening("127.0.0.1", port, 10)
            return up, time.monotonic() - started
        finally:
            await later
            listener.close()

    up, waited = asyncio.run(scenario())
    assert up and 0.4 <= waited < 1.0


def test_a_stopped_container_ends_the_wait_and_a_budget_bounds_it() -> None:
    port = _free_port()
    stopped = _Spawner()
    stopped.exit_status = "ExitCode=1"
    started = time.monotonic()
    assert asyncio.run(stopped._wait_listening("127.0.0.1", port, 30)) is False
    assert time.monotonic() - started < 3
    started = time.monotonic()
    assert asyncio.run(_Spawner()._wait_listening("127.0.0.1", port, 0.3)) is False
    assert time.monotonic() - started < 1.5
