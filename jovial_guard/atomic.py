"""Durable, atomic file replacement: write a temp file, fsync it, rename, fsync the directory.

Readers see either the old or the new content, never a torn file, and a crash after
:func:`atomic_write` returns cannot lose the write. The one writer for every file that is
replaced in place: key files and their public keys (:mod:`jovial_guard.keyfile`), the
credentials' revocation list, grant envelopes and rewraps, the policy store's pointer and key
id, the webhook's certificates, the dashboard's hardening records and the audit follower's
offset.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically, created with ``mode`` (never wider).

    ``durable=False`` skips the fsyncs (still atomic). ``sync_dir=False`` fsyncs the file
    but leaves the directory fsync to the caller: bulk work (rewrapping many grants) calls
    :func:`sync_directory` once at the end.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    if durable and sync_dir:
        sync_directory(directory)


def sync_directory(directory: Path) -> None:
    """fsync a directory so renames inside it survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and refuse one others can write to."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o022:
        os.chmod(path, st.st_mode & ~0o077)
    return path
