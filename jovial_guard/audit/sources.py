"""Event sources that feed the audit service from outside HTTP: the container engine's
event stream (podman's Docker-API ``/events``, or podman's events file) and JupyterHub's
event log (``server-action`` events).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..atomic import atomic_write
from ..constants import DOCKER_API_VERSION
from ..errors import Unavailable
from .events import MalformedEvent, engine_event
from .service import AuditService

log = logging.getLogger(__name__)


def memory_cgroup_counter(pid: int) -> Path | None:
    """The file holding the kernel's ``oom_kill`` counter for the memory cgroup of ``pid``.

    cgroup v1: ``/sys/fs/cgroup/memory/<path>/memory.oom_control``; v2:
    ``/sys/fs/cgroup/<path>/memory.events``. None if the process is gone.
    """
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"
            if candidate.exists():
                return candidate
    for line in lines:
        if line.startswith("0::"):
            candidate = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
            if candidate.exists():
                return candidate
    return None


def read_oom_kills(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


class EngineEventStream:
    """Follow ``GET /events`` on a Docker-API unix socket (``unix:///run/.../podman.sock``).

    Reconnects with backoff. Each kept event (start, die, exec...) is recorded durably
    before the next one is read, so the stream's order is the log's order.

    OOM kills: podman 4.3 on cgroup v1 emits no ``oom`` event (an OOM-killed process shows
    up only as exit code 137, and ``State.OOMKilled`` stays false), so this source also
    watches the kernel's ``oom_kill`` counter in each running container's memory cgroup (the
    signal containerd and Docker turn into their ``oom`` event) and records a
    ``container oom`` event whenever it goes up.
    """

    def __init__(self, service: AuditService, base_url: str, *, api_version: str = DOCKER_API_VERSION) -> None:
        if not base_url.startswith("unix://"):
            raise ValueError("base_url must be unix:///path/to/podman.sock")
        self.service = service
        self.socket_path = base_url[len("unix://"):]
        self.api_version = api_version
        self._task: asyncio.Task[None] | None = None
        self._oom_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.seen = 0
        self.oom_poll = 0.1
        #: container id -> (counter file, last count, name)
        self._watched: dict[str, tuple[Path, int, str | None]] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="engine-events")
        self._oom_task = loop.create_task(self._watch_oom(), name="engine-oom")

    async def stop(self) -> None:
        for task in (self._task, self._oom_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._oom_task = None

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket_path),
                                     timeout=aiohttp.ClientTimeout(total=30))

    async def _watch_container(self, cid: str) -> None:
        async with self._session() as session:
            async with session.get(f"http://engine/v{self.api_version}/containers/{cid}/json") as resp:
                if resp.status != 200:
                    return
                info = await resp.json()
        pid = int((info.get("State") or {}).get("Pid") or 0)
        counter = memory_cgroup_counter(pid) if pid > 0 else None
        if counter is None:
            return
        count = await asyncio.to_thread(read_oom_kills, counter)
        if count is not None:
            self._watched[info.get("Id", cid)] = (counter, count, str(info.get("Name", "")).lstrip("/") or None)

    async def _watch_running(self) -> None:
        async with self._session() as session:
            async with session.get(f"http://engine/v{self.api_version}/containers/json") as resp:
                running = await resp.json() if resp.status == 200 else []
        for container in running:
            try:
                await self._watch_container(container["Id"])
            except Exception:  # one container that cannot be watched must not stop the others
                log.exception("cannot watch container %s for OOM kills", container.get("Id"))

    async def _check_oom(self, cid: str) -> None:
        entry = self._watched.get(cid)
        if entry is None:
            return
        counter, last, name = entry
        count = await asyncio.to_thread(read_oom_kills, counter)
        if count is None or count <= last:
            return
        self._watched[cid] = (counter, count, name)
        await self.service.record({
            "kind": "engine", "source": "engine", "rule": "container oom", "priority": "Warning",
            "event_time": None, "summary": f"the kernel OOM-killed {count - last} process(es) in container "
                                           f"{name or cid[:12]}",
            "container_id": cid, "container_name": name, "pod": None, "namespace": None, "labels": {},
            "fields": {"action": "oom", "oom_kills": count - last, "oom_kills_total": count,
                       "cgroup": str(counter.parent)},
        })

    async def _watch_oom(self) -> None:
        await self.connected.wait()
        await self._watch_running()
        while True:
            for cid in list(self._watched):
                try:
                    await self._check_oom(cid)
                except Exception:  # keep watching the others
                    log.exception("OOM check for %s", cid[:12])
            await asyncio.sleep(self.oom_poll)

    async def _run(self) -> None:
        backoff = 0.2
        filters = quote(json.dumps({"type": ["container"]}))
        url = f"http://engine/v{self.api_version}/events?filters={filters}"
        while True:
            try:
                connector = aiohttp.UnixConnector(path=self.socket_path)
                timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    async with session.get(url) as resp:
                        if resp.status != 200:
                            raise Unavailable(f"engine /events answered {resp.status}")
                        self.connected.set()
                        backoff = 0.2
                        async for line in resp.content:
                            await self._handle(line)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following; the gap is logged
                log.warning("engine event stream: %s; reconnecting", exc)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _handle(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        self.seen += 1
        try:
            event = engine_event(orjson.loads(line))
        except (orjson.JSONDecodeError, MalformedEvent) as exc:
            await self.service.quarantine([(line, str(exc))], endpoint="engine-stream")
            return
        if event is None:
            return
        cid = event["container_id"]
        action = event["rule"]
        if action in ("container die", "container exec") or action.startswith("container exec"):
            await self._check_oom(cid)  # an OOM kill often shows up first as exit 137
        if action == "container start":
            # Watch before recording: once the start is in the log, OOM kills are seen.
            try:
                await self._watch_container(cid)
            except Exception:  # OOM attribution degrades; intake goes on
                log.exception("cannot watch container %s for OOM kills", cid[:12])
        await self.service.record(event)
        if action == "container die":
            self._watched.pop(cid, None)


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)


class EngineEventsFile:
    """Follow podman's events file (``events_logger = "file"``), resuming at a saved offset.

    Unlike the API stream, nothing is missed while the audit service is down: the offset
    is saved after each durable batch in ``<audit dir>/engine-events.offset``.
    """

    def __init__(self, service: AuditService, path: str | Path, *, poll: float = 0.2,
                 from_start: bool = False) -> None:
        self.service = service
        self.path = Path(path)
        self.poll = poll
        self.offset_file = service.directory / "engine-events.offset"
        self.from_start = from_start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine-events-file")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _load_offset(self) -> int:
        try:
            return int(self.offset_file.read_text().strip())
        except (OSError, ValueError):
            if self.from_start or not self.path.exists():
                return 0
            return self.path.stat().st_size

    async def _run(self) -> None:
        offset = self._load_offset()
        while True:
            try:
                size = self.path.stat().st_size if self.path.exists() else 0
                if size < offset:  # rotated or truncated by the engine: start over
                    offset = 0
                if size > offset:
                    data = await asyncio.to_thread(_read_range, self.path, offset, size - offset)
                    end = data.rfind(b"\n") + 1
                    if end:
                        await self._handle_lines(data[:end].split(b"\n"))
                        offset += end
                        # Not fsync'd: after a crash the follower may read a few lines
                        # again (recording them twice); it never skips one.
                        atomic_write(self.offset_file, str(offset).encode(), durable=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep following; the error is logged
                log.exception("engine events file follower")
            await asyncio.sleep(self.poll)

    async def _handle_lines(self, lines: list[bytes]) -> None:
        events = []
        bad = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = engine_event(orjson.loads(line))
            except (orjson.JSONDecodeError, MalformedEvent) as exc:
                bad.append((line, str(exc)))
                continue
            if event is not None:
                events.append(event)
        if bad:
            await self.service.quarantine(bad, endpoint="engine-file")
        await self.service.record_many(events)


class HubEventForwarder(logging.Handler):
    """A logging handler for JupyterHub's EventLogger that forwards server-action events.

    In jupyterhub_config.py::

        from jovial_guard.audit.sources import HubEventForwarder
        c.EventLogger.handlers = [HubEventForwarder("http://127.0.0.1:8765")]

    Posting happens on a background thread so the hub's event loop never waits on audit.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url.rstrip("/") + "/hub"
        self.token = token
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._worker, name="audit-hub-events", daemon=True)
        self._thread.start()
        self.failures = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> HubEventForwarder:
        """The handler itself: config loaders deep-copy trait values, and a handler owns a
        lock and a worker thread that must stay one."""
        return self

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if isinstance(msg, dict) and str(msg.get("__schema__", "")).endswith("/server-action"):
            try:
                self._queue.put_nowait(dict(msg))
            except queue.Full:
                self.failures += 1

    def _worker(self) -> None:
        import requests

        session = requests.Session()
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        while True:
            doc = self._queue.get()
            if doc is None:
                return
            try:
                resp = session.post(self.url, data=orjson.dumps(doc, default=str), timeout=self.timeout,
                                    headers={"Content-Type": "application/json"})
                if resp.status_code != 200:
                    self.failures += 1
            except Exception:  # a lost forward is counted in failures
                self.failures += 1
                log.exception("could not forward hub event to the audit service")

    def close(self) -> None:
        self._queue.put(None)
        super().close()
