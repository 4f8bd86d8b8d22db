"""Thin wrappers over mount(2)/umount2(2) and /proc/self/mountinfo (Linux only).

ctypes instead of the ``mount`` program: errors come back as errno with the path, and the
flags used are exactly the ones written here (no helper guessing at options).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from ..errors import MountError

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def mount(source: Path | None, target: Path, flags: int, *, what: str) -> None:
    src = os.fsencode(str(source)) if source is not None else None
    if _libc.mount(src, os.fsencode(str(target)), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise MountError(f"{what}: mount {source or ''} -> {target} failed: {os.strerror(err)} (errno {err})")


def bind(source: Path, target: Path, *, read_only: bool) -> None:
    """Bind ``source`` on ``target``, then remount nosuid,nodev (+ro). Both steps or neither."""
    mount(source, target, MS_BIND, what="bind")
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    try:
        mount(None, target, flags, what="remount")
    except MountError:
        unmount(target)
        raise


def unmount(target: Path) -> None:
    """Detach ``target`` (lazy: gone from every namespace it propagates to at once)."""
    if _libc.umount2(os.fsencode(str(target)), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err == 22 and not is_mountpoint(target):  # EINVAL: not mounted any more
            return
        raise MountError(f"unmount {target} failed: {os.strerror(err)} (errno {err})")


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, optional fields) for every mount in this namespace."""
    rows = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            rows.append((point, " ".join(fields[6:sep])))
    return rows


def is_mountpoint(path: Path) -> bool:
    target = os.path.realpath(path)
    return any(point == target for point, _ in mountinfo())


def propagation(path: Path) -> str:
    """``shared``/``slave``/``private`` for the top mount at ``path`` ("" if not a mount point)."""
    target = os.path.realpath(path)
    found = ""
    for point, optional in mountinfo():
        if point == target:
            found = "shared" if "shared:" in optional else "slave" if "master:" in optional else "private"
    return found


def make_own_mount(path: Path, *, flag: int) -> None:
    """Make ``path`` a mount point of its own with the given propagation (idempotent)."""
    path.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(path):
        mount(path, path, MS_BIND, what="self-bind")
    # Private first: leave any peer group inherited from a shared parent (systemd hosts),
    # so a shared staging root starts a peer group of its own.
    mount(None, path, MS_PRIVATE, what="make private")
    if flag != MS_PRIVATE:
        mount(None, path, flag, what="set propagation")
