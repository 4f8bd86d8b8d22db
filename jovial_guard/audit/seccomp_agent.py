"""The seccomp agent: answers each call a notebook's profile refuses, and records it.

Containers started with an audited profile
(:func:`jovial_guard.hardening.seccomp_notify.audited_profile`) route their refused calls
here: at creation runc connects to the agent's socket and hands over the filter's
notification descriptor with the container's OCI state (id, the profile's policy name as
metadata). From then on each refused call waits in the kernel until the agent answers; the
agent always answers EPERM, the answer the profile itself gives, and never lets a call
through.

Each refusal becomes an audit event (kind ``seccomp``) attributed through the spawn
registry by container id, with the container's name looked up from the engine. The first
call of each syscall in a container is recorded at once; repeats are counted and recorded
as one event per syscall every ``repeat_interval`` seconds, so a loop of refused calls
cannot flood the log. A descriptor that cannot be read is closed (the kernel then answers
ENOSYS: still refused).
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import fcntl
import json
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..constants import DOCKER_API_VERSION
from ..errors import Unavailable
from .service import AuditService

log = logging.getLogger(__name__)

SYS_SECCOMP = 317  # x86_64
SECCOMP_GET_NOTIF_SIZES = 3
AUDIT_ARCH_X86_64 = 0xC000003E
RULE = "syscall refused by seccomp profile"


class SeccompAgentUnavailable(Unavailable):
    """The agent cannot listen (socket path taken, no seccomp notification support)."""


def _iowr(number: int, size: int) -> int:
    """``_IOWR('!', number, size)``: the seccomp notification ioctls."""
    return (3 << 30) | (size << 16) | (ord("!") << 8) | number


@dataclass(frozen=True)
class NotifSizes:
    notif: int
    resp: int

    @property
    def recv(self) -> int:
        return _iowr(0, self.notif)

    @property
    def send(self) -> int:
        return _iowr(1, self.resp)


def notif_sizes() -> NotifSizes:
    """The kernel's notification struct sizes (``SECCOMP_GET_NOTIF_SIZES``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    sizes = (ctypes.c_uint16 * 3)()
    if libc.syscall(SYS_SECCOMP, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes)) != 0:
        raise SeccompAgentUnavailable(
            f"the kernel has no seccomp user notification: {os.strerror(ctypes.get_errno())}")
    return NotifSizes(notif=sizes[0], resp=sizes[1])


@dataclass(frozen=True)
class Handshake:
    """What runc sends with the descriptor: the container's id and the profile's name."""

    container_id: str
    profile: str
    pid: int


def parse_handshake(message: bytes) -> Handshake:
    """Parse runc's ContainerProcessState JSON; raises ValueError naming what is wrong."""
    doc = json.loads(message)
    state = doc.get("state") if isinstance(doc, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("id"), str) or not state["id"]:
        raise ValueError("no container state with an id")
    if doc.get("fds") != ["seccompFd"]:
        raise ValueError(f"expected one seccompFd, got {doc.get('fds')!r}")
    return Handshake(container_id=state["id"], profile=str(doc.get("metadata") or ""),
                     pid=int(doc.get("pid") or state.get("pid") or 0))


def refusal_event(*, container_id: str, container_name: str | None, profile: str,
                  syscall: str, pid: int, comm: str, count: int, first: bool) -> dict[str, Any]:
    """The audit event for ``count`` refusals of ``syscall`` in one container (pure)."""
    where = container_name or container_id[:12]
    what = (f"{comm or 'a process'} (host pid {pid}) called {syscall}" if first
            else f"{syscall} was called {count} more time(s)")
    return {
        "kind": "seccomp", "source": "seccomp-agent", "rule": RULE, "priority": "Warning",
        "summary": f"{what} in container {where}: refused with EPERM by {profile or 'its profile'}",
        "container_id": container_id, "container_name": container_name, "pod": None,
        "namespace": None, "labels": {},
        "fields": {"syscall": syscall, "errno": "EPERM", "profile": profile, "count": count,
                   "first": first, "pid": pid, "comm": comm},
    }


class SeccompAgent:
    """Listen on ``socket_path`` for runc's descriptors; answer and record refusals."""

    def __init__(self, service: AuditService, socket_path: Path, *, engine_url: str | None = None,
                 repeat_interval: float = 10.0) -> None:
        from ..hardening.audit_netlink import AuditUnavailable, SyscallNames

        self.service = service
        self.socket_path = Path(socket_path)
        self.engine_socket = engine_url[len("unix://"):] if engine_url and engine_url.startswith("unix://") else None
        self.repeat_interval = repeat_interval
        self.sizes = notif_sizes()
        try:
            self.names = SyscallNames()
        except AuditUnavailable as exc:
            raise SeccompAgentUnavailable(str(exc)) from exc
        self.attached = 0
        self.refused = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: dict[int, Handshake] = {}
        self._seen: set[tuple[str, str]] = set()
        self._repeats: dict[tuple[str, str, str], int] = {}
        self._container_names: dict[str, str | None] = {}
        self._names: dict[tuple[int, int], str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # a dead socket left by a crashed agent
            else:
                probe.close()
                raise SeccompAgentUnavailable(f"another seccomp agent answers on {path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # only root (runc) may hand descriptors over
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise SeccompAgentUnavailable(f"cannot listen on {path}: {exc}") from exc
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="seccomp-agent", daemon=True)
        self._thread.start()
        self._flusher = self._loop.create_task(self._flush_repeats(), name="seccomp-repeats")

    async def stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        await self._write_repeats()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for fd in list(self._fds):
            self._release(fd)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    # -- runc's handshake (a thread: accept and recvmsg block) ------------------------------
    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                self._receive(conn)

    def _receive(self, conn: socket.socket) -> None:
        fds = array.array("i")
        try:
            message, ancillary, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
        except OSError as exc:
            log.warning("seccomp agent: handshake failed: %s", exc)
            return
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        try:
            handshake = parse_handshake(message)
            if len(fds) != 1:
                raise ValueError(f"expected one descriptor, got {len(fds)}")
        except ValueError as exc:
            log.warning("seccomp agent: refused a handshake: %s", exc)
            for fd in fds:
                os.close(fd)
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._adopt, handshake, fds[0])

    # -- notifications (the event loop) -----------------------------------------------------
    def _adopt(self, handshake: Handshake, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fds[fd] = handshake
        self.attached += 1
        asyncio.get_running_loop().add_reader(fd, self._on_ready, fd)
        self._spawn(self._record_attached(handshake))

    def _release(self, fd: int) -> None:
        handshake = self._fds.pop(fd, None)
        if handshake is not None and self._loop is not None:
            self._loop.remove_reader(fd)
            os.close(fd)
            self._seen = {k for k in self._seen if k[0] != handshake.container_id}
            self._container_names.pop(handshake.container_id, None)

    def _on_ready(self, fd: int) -> None:
        handshake = self._fds.get(fd)
        if handshake is None:
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(0)
        if not ready or not ready[0][1] & select.POLLIN:
            self._release(fd)  # every process of the filter is gone
            return
        buf = bytearray(self.sizes.notif)
        try:
            fcntl.ioctl(fd, self.sizes.recv, buf)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                log.warning("seccomp agent: dropping container %s: %s", handshake.container_id[:12], exc)
                self._release(fd)
            return
        notif_id, pid, _flags, nr, arch = struct.unpack_from("=QIIiI", buf)
        syscall = self._syscall_name(arch, nr)
        key = (handshake.container_id, syscall)
        first = key not in self._seen
        comm = _comm(pid) if first else ""  # read while the caller waits for the answer
        try:
            fcntl.ioctl(fd, self.sizes.send, struct.pack("=QqiI", notif_id, 0, -errno.EPERM, 0))
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the caller was interrupted or died
                log.warning("seccomp agent: answer failed: %s", exc)
        self.refused += 1
        if not first:
            repeat = (*key, handshake.profile)
            self._repeats[repeat] = self._repeats.get(repeat, 0) + 1
            return
        self._seen.add(key)
        self._spawn(self._record(handshake, syscall=syscall, pid=pid, comm=comm, count=1, first=True))

    def _syscall_name(self, arch: int, nr: int) -> str:
        name = self._names.get((arch, nr))
        if name is None:
            name = self.names.name(arch, nr) if arch == AUDIT_ARCH_X86_64 else f"{nr}@arch{arch:x}"
            self._names[(arch, nr)] = name
        return name

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- recording --------------------------------------------------------------------------
    async def _container_name(self, container_id: str) -> str | None:
        if container_id in self._container_names or self.engine_socket is None:
            return self._container_names.get(container_id)
        name = None
        try:
            connector = aiohttp.UnixConnector(path=self.engine_socket)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
                url = f"http://engine/v{DOCKER_API_VERSION}/containers/{container_id}/json"
                async with session.get(url) as resp:
                    if resp.status == 200:
                        name = str((await resp.json()).get("Name", "")).lstrip("/") or None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("seccomp agent: no name for container %s: %s", container_id[:12], exc)
        self._container_names[container_id] = name
        return name

    async def _record(self, handshake: Handshake, *, syscall: str, pid: int, comm: str,
                      count: int, first: bool) -> None:
        name = await self._container_name(handshake.container_id)
        await self.service.record(refusal_event(
            container_id=handshake.container_id, container_name=name, profile=handshake.profile,
            syscall=syscall, pid=pid, comm=comm, count=count, first=first))

    async def _record_attached(self, handshake: Handshake) -> None:
        name = await self._container_name(handshake.container_id)
        await self.service.record({
            "kind": "seccomp", "source": "seccomp-agent", "rule": "seccomp refusals audited",
            "priority": "Informational",
            "summary": f"container {name or handshake.container_id[:12]} started under "
                       f"{handshake.profile or 'an audited profile'}; its refusals are recorded",
            "container_id": handshake.container_id, "container_name": name, "pod": None,
            "namespace": None, "labels": {},
            "fields": {"profile": handshake.profile, "pid": handshake.pid},
        })

    async def _write_repeats(self) -> None:
        repeats, self._repeats = self._repeats, {}
        for (container_id, syscall, profile), count in sorted(repeats.items()):
            await self._record(Handshake(container_id, profile, 0), syscall=syscall, pid=0, comm="",
                               count=count, first=False)

    async def _flush_repeats(self) -> None:
        while True:
            await asyncio.sleep(self.repeat_interval)
            try:
                await self._write_repeats()
            except Exception:  # keep answering; the next round retries nothing lost in memory
                log.exception("seccomp agent: recording repeats failed")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
