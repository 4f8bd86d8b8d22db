"""Idmapped bind mounts (Linux 5.12+): a fileset seen through one user's id mapping.

Why: a user's container runs in a user namespace of its own (container ids 0..65535 are
host ids ``B..B+65535``, a different ``B`` per user). A fileset on disk keeps the ids the
storage knows (uid 1000 for every notebook user, as on a real Lustre with fixed ids); the
mount the agent hands alice's container is idmapped through alice's mapping, so her
container sees the files as its uid 1000 while the host sees ``B_alice + 1000``. Shared
project filesets keep working for every member, and no file on disk is chowned.

The new mount API, through ctypes (Python 3.11 has no wrappers): ``open_tree`` clones the
source as a detached mount, ``mount_setattr`` sets ``MOUNT_ATTR_IDMAP`` with a user
namespace holding the mapping (plus nosuid, nodev, read-only when asked), ``move_mount``
attaches it: a new mount, so it propagates into the container through the shared staging
root like a plain bind. The mapping namespace comes from a short-lived ``unshare --user``
child whose maps this process writes; an open descriptor keeps the namespace after the
child is gone. A user's mapping never changes (their block is theirs for good), so
:class:`MappingNamespaces` keeps one namespace per mapping open and every later mount of
that user reuses it: a spawn forks no process for its mount but the user's first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from ...hardening.userns import IdMap
from ..errors import MountError

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str, path: Path) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise MountError(f"idmapped mount: {what} {path} failed: {os.strerror(err)} (errno {err})")
    return result


def mapping_namespace(id_map: IdMap) -> int:
    """An fd of a user namespace whose uid and gid maps are ``id_map`` (caller closes it)."""
    child = subprocess.Popen(["unshare", "--user", "--", "sh", "-c", "echo ready; read _"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if child.stdout is None or child.stdout.readline() != b"ready\n":
            raise MountError("idmapped mount: could not start a user namespace (unshare --user)")
        line = f"0 {id_map.host_start} {id_map.size}\n"
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{child.pid}/{name}").write_text(line)
        return os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise MountError(f"idmapped mount: could not set up the mapping {id_map.line}: {exc}") from exc
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


class MappingNamespaces:
    """Open user namespaces holding id mappings, one per mapping, the least recently used
    closed beyond ``keep`` (each costs one descriptor; a closed one is made again)."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._open: OrderedDict[IdMap, int] = OrderedDict()
        self._lock = threading.Lock()
        #: Namespaces made (a child process each), for the benchmark and tests.
        self.made = 0

    def descriptor(self, id_map: IdMap) -> int:
        """A new descriptor of the namespace holding ``id_map`` (the caller closes it)."""
        with self._lock:
            fd = self._open.get(id_map)
            if fd is not None:
                self._open.move_to_end(id_map)
                return os.dup(fd)
        made = mapping_namespace(id_map)
        with self._lock:
            self.made += 1
            if id_map in self._open:  # made meanwhile by another thread: keep one
                os.close(made)
                return os.dup(self._open[id_map])
            self._open[id_map] = made
            while len(self._open) > self.keep:
                os.close(self._open.popitem(last=False)[1])
            return os.dup(made)

    def close(self) -> None:
        with self._lock:
            for fd in self._open.values():
                os.close(fd)
            self._open.clear()


#: The process's mapping namespaces (the agent mounts for every user of this hub).
MAPPINGS = MappingNamespaces()


def idmapped_bind(source: Path, target: Path, *, id_map: IdMap, read_only: bool,
                  mappings: MappingNamespaces = MAPPINGS) -> None:
    """Bind ``source`` on ``target`` seen through ``id_map``, nosuid,nodev (+ro)."""
    userns = mappings.descriptor(id_map)
    tree = -1
    try:
        tree = _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(str(source)),
                                    _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC), "open_tree", source)
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                          | (MOUNT_ATTR_RDONLY if read_only else 0), userns_fd=userns)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.sizeof(attr)), "mount_setattr", source)
        _check(_libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(str(target)),
                             _MOVE_MOUNT_F_EMPTY_PATH), "move_mount onto", target)
    finally:
        if tree >= 0:
            os.close(tree)
        os.close(userns)
