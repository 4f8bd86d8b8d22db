"""Serve the store's current signed bundle to OPA over loopback HTTP, with long polling.

OPA's bundle plugin downloads ``/bundles/jovial_guard.tar.gz`` with the last ETag and a
``Prefer: wait=N`` header; we answer 304 when nothing changed within N seconds, or the new
bundle as soon as ``current`` moves. That is what makes a deploy take effect in well under
two seconds, atomically, on every OPA that polls us (the embedded one and each webhook
replica's sidecar).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Protocol

from aiohttp import web

from .bundles import BUNDLE_NAME

BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
_WAIT = re.compile(r"wait=(\d+)")


class BundleSource(Protocol):
    """Where the served bundle comes from: the policy store, or a cluster's ConfigMap."""

    def current(self) -> str | None: ...

    def bundle_bytes(self, revision: str) -> bytes: ...


def make_bundle_app(store: BundleSource, *, check_interval: float = 0.05) -> web.Application:
    """The bundle endpoint. A waiting request re-reads only the store's small ``current``
    pointer every ``check_interval``; the bundle itself is read once per revision."""
    latest: dict[str, bytes] = {}

    def payload(revision: str) -> bytes:
        if revision not in latest:
            data = store.bundle_bytes(revision)
            latest.clear()
            latest[revision] = data
        return latest[revision]

    async def bundle(request: web.Request) -> web.StreamResponse:
        match = _WAIT.search(request.headers.get("Prefer", ""))
        deadline = time.monotonic() + (min(int(match.group(1)), 60) if match else 0)
        seen = request.headers.get("If-None-Match", "").strip('"')
        while True:
            revision = store.current()
            if revision is None:
                return web.Response(status=404, text="no policy revision is active")
            if revision != seen:
                try:
                    body = payload(revision)
                except (KeyError, FileNotFoundError):  # replaced between the two reads
                    await asyncio.sleep(check_interval)
                    continue
                return web.Response(body=body, content_type=BUNDLE_CONTENT_TYPE,
                                    headers={"ETag": f'"{revision}"'})
            if time.monotonic() >= deadline:
                return web.Response(status=304, headers={"ETag": f'"{revision}"', "Content-Type": BUNDLE_CONTENT_TYPE})
            await asyncio.sleep(check_interval)

    replicas: dict[str, dict[str, object]] = {}

    async def status(request: web.Request) -> web.Response:
        """OPA's status plugin: remember which revision each OPA instance activated."""
        try:
            doc = await request.json()
            instance = str(doc["labels"]["id"])
            state = doc.get("bundles", {}).get(BUNDLE_NAME, {})
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.Response(status=400, text="not an OPA status report")
        errors = state.get("errors") or ([state["message"]] if state.get("message") else [])
        replicas[instance] = {"revision": str(state.get("active_revision", "")), "seen": time.time(),
                              "error": "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:500]}
        return web.Response(status=200)

    async def list_replicas(request: web.Request) -> web.Response:
        now = time.time()
        return web.json_response([{"id": k, "revision": v["revision"], "age": round(now - float(v["seen"]), 3), "error": v["error"]}  # type: ignore[arg-type]
                                  for k, v in sorted(replicas.items())])

    app = web.Application()
    app.router.add_get(f"/bundles/{BUNDLE_NAME}.tar.gz", bundle)
    app.router.add_post("/status", status)
    app.router.add_get("/replicas", list_replicas)
    return app


class BundleServer:
    """Run the bundle app on a loopback port in its own thread and event loop.

    Its own thread, because the processes that need it (``jovial-guard up``, tests) start
    OPA synchronously and OPA must be able to download the bundle while they wait.
    """

    def __init__(self, store: BundleSource, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BundleServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="jovial-guard-bundle-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(make_bundle_app(self.store), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses  # the bound address, with the port when 0 was asked
        if addresses:
            self.port = int(addresses[0][1])

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
