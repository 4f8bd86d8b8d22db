"""Stopping a child process group: the one way the project and its tests end a server.

Servers are started with ``start_new_session=True`` so that the helpers they start (OPA's
children, uvicorn-style workers, a hub's proxy) share one process group. Ending the group,
not just the leader, is what leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *, grace: float = 15.0) -> int | None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` seconds; its exit status.

    A group that is already gone is not an error: the caller wanted it stopped.
    """
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=5)
    except ProcessLookupError:
        return proc.wait(timeout=5)
