"""Webhook workers tell the bundle service which revision they decide with.

Why: with the compiled policy (``webhook.engine: wasm``) the webhook's workers decide, not
an OPA, so ``jovial-guard policy deploy --replicas N`` must hear from them: a signed bundle
they refuse (no compiled policy in it, a bad signature) must not count as deployed. Each
worker posts what OPA's status plugin posts (``labels.id``, the bundle's
``active_revision`` and errors) to the bundle service it fetches bundles from, as
``POD/PID``: the part before ``/`` names the replica, and :mod:`.replicas` counts a replica
as switched only when every worker of it that reported lately serves the revision. A
worker reports when its revision or error changes and every :data:`HEARTBEAT` seconds, so a
worker that is gone stops counting after :data:`~.replicas.WORKER_STALE` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import aiohttp

from .bundles import BUNDLE_NAME

log = logging.getLogger(__name__)

#: Seconds between reports of an unchanged state.
HEARTBEAT = 10.0


def status_url(bundle_url: str) -> str | None:
    """The bundle service's status endpoint for a bundle URL (None: a file, no service)."""
    if not bundle_url.startswith(("http://", "https://")) or f"/bundles/{BUNDLE_NAME}" not in bundle_url:
        return None
    return bundle_url.split("/bundles/", 1)[0] + "/status"


def worker_id() -> str:
    """``POD/PID``: the pod's host name (a replica) and this worker process."""
    return f"{socket.gethostname()}/{os.getpid()}"


class WorkerStatus:
    """Post this worker's revision (and why a bundle was refused) to ``url``."""

    def __init__(self, url: str, *, instance: str | None = None, timeout: float = 3.0) -> None:
        self.url = url
        self.instance = instance or worker_id()
        self.timeout = timeout
        self._sent: tuple[str, str] | None = None
        self._at = 0.0
        self._failed = False

    def report_for(self, revision: str, error: str) -> dict[str, object]:
        """The report (OPA's status plugin's shape; pure)."""
        bundle: dict[str, object] = {"name": BUNDLE_NAME, "active_revision": revision}
        if error:
            bundle["errors"] = [{"message": error}]
        return {"labels": {"id": self.instance, "engine": "wasm"}, "bundles": {BUNDLE_NAME: bundle}}

    async def report(self, revision: str, error: str) -> None:
        """Send the state if it changed or the last report is older than :data:`HEARTBEAT`;
        a failure is logged once and retried at the next call."""
        state = (revision, error)
        if state == self._sent and time.monotonic() - self._at < HEARTBEAT:
            return
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session, \
                    session.post(self.url, json=self.report_for(revision, error)) as response:
                response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if not self._failed:
                log.warning("could not report revision %s to %s: %s", revision or "(none)", self.url, exc)
            self._failed = True
            return
        self._sent, self._at, self._failed = state, time.monotonic(), False
