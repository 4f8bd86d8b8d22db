"""The bundle endpoint's long poll: answers as soon as the revision moves, reads each bundle once."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from jovial_guard.policy.bundle_server import make_bundle_app
from jovial_guard.policy.bundles import BUNDLE_NAME

URL = f"/bundles/{BUNDLE_NAME}.tar.gz"


class CountingStore:
    """The two store calls the endpoint makes, counting bundle reads."""

    def __init__(self) -> None:
        self.revision: str | None = "r1"
        self.reads: list[str] = []

    def current(self) -> str | None:
        return self.revision

    def bundle_bytes(self, revision: str) -> bytes:
        self.reads.append(revision)
        return f"bundle {revision}".encode()


async def test_long_poll_reads_the_bundle_once_per_revision() -> None:
    store = CountingStore()
    async with TestClient(TestServer(make_bundle_app(store, check_interval=0.01))) as client:  # type: ignore[arg-type]
        first = await client.get(URL)
        assert first.status == 200 and await first.read() == b"bundle r1"
        assert first.headers["ETag"] == '"r1"'

        started = time.monotonic()
        unchanged = await client.get(URL, headers={"If-None-Match": '"r1"', "Prefer": "wait=1"})
        assert unchanged.status == 304
        assert time.monotonic() - started >= 0.9  # it waited ~100 checks of the pointer...
        assert store.reads == ["r1"]  # ...without reading the bundle again

        again = await client.get(URL)
        assert await again.read() == b"bundle r1" and store.reads == ["r1"]

        async def deploy() -> None:
            await asyncio.sleep(0.2)
            store.revision = "r2"

        task = asyncio.create_task(deploy())
        started = time.monotonic()
        moved = await client.get(URL, headers={"If-None-Match": '"r1"', "Prefer": "wait=10"})
        await task
        assert moved.status == 200 and await moved.read() == b"bundle r2"
        assert time.monotonic() - started < 2
        assert store.reads == ["r1", "r2"]


async def test_no_active_revision_is_404() -> None:
    store = CountingStore()
    store.revision = None
    async with TestClient(TestServer(make_bundle_app(store))) as client:  # type: ignore[arg-type]
        resp = await client.get(URL)
        assert resp.status == 404 and store.reads == []
