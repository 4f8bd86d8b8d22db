"""Seccomp log records, read live from the kernel's audit netlink multicast group.

Why not the kernel log: without an audit daemon the kernel prints audit records through
printk, rate-limited (10 messages per 5 s here), so ``dmesg`` loses almost all of them.
Every record is also multicast to ``AUDIT_NLGRP_READLOG`` for any reader with
CAP_AUDIT_READ, and a process that logs faster than the kernel drains waits instead of
dropping (``audit_backlog_wait_time``). Only our socket's own buffer can overflow; the
kernel then reports ENOBUFS, which :class:`AuditReader` counts as lost and a recording with
losses is refused. Nothing on the host is reconfigured: no sysctl, no audit rule, no daemon.

Attribution is by audit session, not by pid: a recorder gives itself a fresh session
(:func:`start_audit_session`) before it starts the container engine, every process the
engine starts inherits it, and no container process can change it (that needs
CAP_AUDIT_CONTROL). Pids would race: a short-lived process has often exited, and its pid
can no longer be mapped to a cgroup, by the time its record is read.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import Unavailable

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
AUDIT_SECCOMP = 1326
#: ``code=`` of a record written because a filter returned SECCOMP_RET_LOG.
SECCOMP_RET_LOG = 0x7FFC0000
RECV_BUFFER = 64 << 20
_NLMSG = struct.Struct("=IHHII")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
#: A child that installs a one-instruction "log everything" filter and exits: once one of
#: its records arrives, every record queued before it (FIFO in kauditd) has arrived too.
_MARKER = (
    "import ctypes,struct\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    f"code=ctypes.create_string_buffer(struct.pack('=HBBI',0x06,0,0,{SECCOMP_RET_LOG}))\n"
    "class P(ctypes.Structure):_fields_=[('n',ctypes.c_ushort),('f',ctypes.c_void_p)]\n"
    "prog=P(1,ctypes.addressof(code))\n"
    "libc.prctl(38,1,0,0,0)\n"
    "raise SystemExit(0 if libc.prctl(22,2,ctypes.byref(prog),0,0)==0 else 1)\n"
)


class AuditUnavailable(Unavailable):
    """The kernel's audit records cannot be read here (reason and remedy in the message)."""


@dataclass(frozen=True)
class SeccompRecord:
    """One ``type=1326`` record: which process made which syscall, and what the filter said."""

    pid: int
    session: int
    arch: int
    syscall: int
    code: int
    comm: str
    exe: str


def parse_seccomp(text: str) -> SeccompRecord | None:
    """Parse the body of an AUDIT_SECCOMP record; None when a field is missing or odd."""
    fields = {k: v.strip('"') for k, v in _FIELD.findall(text)}
    try:
        return SeccompRecord(
            pid=int(fields["pid"]), session=int(fields["ses"]), arch=int(fields["arch"], 16),
            syscall=int(fields["syscall"]), code=int(fields["code"], 16),
            comm=fields.get("comm", ""), exe=fields.get("exe", ""),
        )
    except (KeyError, ValueError):
        return None


def start_audit_session() -> int:
    """Give the calling thread (and what it starts from now on) a fresh audit session id.

    Writing one's own login uid makes the kernel allocate a new session. Needs
    CAP_AUDIT_CONTROL once a login uid is set; refused outright where login uids are
    immutable.
    """
    loginuid = Path("/proc/thread-self/loginuid")
    try:
        loginuid.write_text(str(os.getuid()))
        return int(Path("/proc/thread-self/sessionid").read_text())
    except OSError as exc:
        raise AuditUnavailable(
            f"cannot start an audit session ({exc.strerror or exc}): the recorder must run as "
            "root in the host's user namespace, with CAP_AUDIT_CONTROL, on a kernel with audit"
        ) from exc


class AuditReader:
    """Collect seccomp records of one audit session in a background thread.

    Use as a context manager; :meth:`sync` waits until everything logged so far has been
    read; :meth:`take` hands over (and forgets) what was collected since the last call.
    """

    def __init__(self, session: int) -> None:
        self.session = session
        self.lost = 0
        self.foreign = 0
        self._records: list[SeccompRecord] = []
        self._lock = threading.Lock()
        self._seen_pids: set[int] = set()
        self._markers: set[int] = set()
        self._host_pidns = os.readlink("/proc/self/ns/pid")
        #: pid -> its pid namespace when first read (None: already gone).
        self._pid_ns: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AuditReader:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        except OSError as exc:
            raise AuditUnavailable(f"no audit netlink socket: {exc}") from exc
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, RECV_BUFFER)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((0, AUDIT_NLGRP_READLOG))
        except OSError as exc:
            sock.close()
            raise AuditUnavailable(
                f"cannot join the audit log multicast group ({exc.strerror or exc}): "
                "needs CAP_AUDIT_READ in the host's user namespace"
            ) from exc
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="audit-reader", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            self._ingest(data)

    def _ingest(self, data: bytes) -> None:
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                break
            if kind == AUDIT_SECCOMP:
                body = data[offset + _NLMSG.size: offset + length].decode(errors="replace")
                record = parse_seccomp(body)
                if record is not None:
                    self._keep(record)
            offset += (length + 3) & ~3

    def _keep(self, record: SeccompRecord) -> None:
        with self._lock:
            self._seen_pids.add(record.pid)
            if record.session == self.session and record.code == SECCOMP_RET_LOG:
                self._records.append(record)
                self._check_namespace(record.pid)
            else:
                self.foreign += 1

    def _check_namespace(self, pid: int) -> None:
        """Note a session pid's pid namespace, once, while it still lives."""
        if pid not in self._pid_ns:
            try:
                self._pid_ns[pid] = os.readlink(f"/proc/{pid}/ns/pid")
            except OSError:
                self._pid_ns[pid] = None  # already gone: the session id attributes it

    def namespace_check(self) -> tuple[int, int]:
        """(pids seen inside a container's pid namespace, pids seen in the host's).

        A cross-check of the session filter: the engine's own processes carry no logging
        filter, so every logging pid still alive when read must be in a container.
        """
        with self._lock:
            seen = [ns for pid, ns in self._pid_ns.items()
                    if ns is not None and pid not in self._markers]
        outside = sum(1 for ns in seen if ns == self._host_pidns)
        return len(seen) - outside, outside

    def sync(self, *, timeout: float = 120.0) -> None:
        """Return once every record logged before this call has been read."""
        marker = subprocess.Popen([sys.executable, "-c", _MARKER])
        with self._lock:
            self._markers.add(marker.pid)
        if marker.wait(timeout=30) != 0:
            raise AuditUnavailable("the audit marker process could not install its filter")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if marker.pid in self._seen_pids:
                    return
            time.sleep(0.02)
        raise AuditUnavailable(f"no audit record of the marker within {timeout:.0f}s")

    def take(self) -> list[SeccompRecord]:
        with self._lock:
            records, self._records = self._records, []
            return [r for r in records if r.pid not in self._markers]


_STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                  "backlog", "version", "backlog_wait_time", "backlog_wait_time_actual")


def audit_status() -> dict[str, int]:
    """The kernel's audit counters (AUDIT_GET; read-only, needs CAP_AUDIT_CONTROL).

    ``lost`` counts records the kernel dropped anywhere (backlog full, no memory); a
    recording compares it before and after, because such a drop never reaches any socket.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT) as sock:
        sock.settimeout(5)
        try:
            sock.bind((0, 0))
            sock.send(_NLMSG.pack(_NLMSG.size, 1000, 0x1, 1, 0))  # AUDIT_GET, NLM_F_REQUEST
            data = sock.recv(8192)
        except OSError as exc:
            raise AuditUnavailable(f"cannot read the kernel's audit status: {exc}") from exc
    length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data)
    body = data[_NLMSG.size:length]
    if kind == 2 and struct.unpack_from("=i", body)[0] != 0:  # NLMSG_ERROR
        code = -struct.unpack_from("=i", body)[0]
        raise AuditUnavailable(f"the kernel refused AUDIT_GET: {os.strerror(code)}")
    values = struct.unpack_from(f"={len(body) // 4}I", body)
    return dict(zip(_STATUS_FIELDS, values, strict=False))


class SyscallNames:
    """Syscall numbers to names with libseccomp, the library runc compiles profiles with."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2")
        except OSError as exc:
            raise AuditUnavailable("libseccomp.so.2 is missing (Debian: libseccomp2)") from exc
        lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
        lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
        lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        self._lib = lib
        self._free = ctypes.CDLL(None).free
        self._free.argtypes = [ctypes.c_void_p]

    def native_names(self, names: Any, arch: int = 0xC000003E) -> frozenset[str]:
        """Those of ``names`` that are real syscalls on ``arch`` (default x86_64)."""
        return frozenset(n for n in names
                         if self._lib.seccomp_syscall_resolve_name_arch(arch, n.encode()) >= 0)

    def all_names(self, arch: int = 0xC000003E, *, highest: int = 1023) -> frozenset[str]:
        """Every syscall name libseccomp knows on ``arch`` (default x86_64)."""
        names = (self.name(arch, n) for n in range(highest + 1))
        return frozenset(n for n in names if not n.startswith("syscall_"))

    def name(self, arch: int, number: int) -> str:
        pointer = self._lib.seccomp_syscall_resolve_num_arch(arch, number)
        if not pointer:
            return f"syscall_{number}_arch_{arch:x}"
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            self._free(pointer)

    def number(self, arch: int, name: str) -> int:
        number = int(self._lib.seccomp_syscall_resolve_name_arch(arch, name.encode()))
        if number < 0:
            raise KeyError(name)
        return number
