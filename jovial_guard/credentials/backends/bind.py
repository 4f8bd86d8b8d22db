"""The ``bind`` backend (embedded default): the user's fileset bind-mounted into their container.

How access reaches a running container and is cut again:

* ``staging_root`` is made a *shared* mount. Each user's container gets
  ``staging_root/<user>`` as a read-only volume at the grant's mount parent (``/lustre``)
  with ``rslave`` propagation (:meth:`BindBackend.container_volume`).
* To mount, the agent binds the fileset directory onto a private work directory, remounts
  it ``ro``/``rw`` + nosuid,nodev there (a remount does not propagate, a new mount does),
  then binds that onto ``staging_root/<user>/<leaf>``. The new mount propagates into the
  container at ``/lustre/<leaf>`` with its flags, whether the container was started before
  or after.
* To revoke, the agent unmounts ``staging_root/<user>/<leaf>``; the unmount propagates too,
  so the running container sees an empty directory at once. (A file the user already held
  open stays open: that is how every Unix revocation behaves; new opens fail.)

* With a user namespace per user, the mount is idmapped through the user's mapping
  (:mod:`.idmapped`): files keep their ids on disk, the container sees them as its own.

Nothing secret lives in the container: it sees file data, never a key or a grant.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...hardening.userns import IdMap
from ..errors import MountError
from ..grant import Grant, is_safe_name
from . import mounts
from .idmapped import idmapped_bind


def user_stage(staging_root: Path, user: str) -> Path:
    """``staging_root/<user>``: where the user's filesets appear on the host (pure)."""
    if not is_safe_name(user):
        raise MountError(f"user {user!r} is not a safe path component")
    return Path(staging_root) / user


def staging_volume(staging_root: Path, *, user: str, mount_parent: str) -> dict[str, dict[str, str]]:
    """The DockerSpawner ``volumes`` entry of a user's staging directory (pure): read-only,
    ``rslave`` so the agent's later mounts and unmounts reach the running container."""
    return {str(user_stage(staging_root, user)): {"bind": mount_parent, "mode": "ro", "propagation": "rslave"}}


@dataclass(frozen=True)
class ActiveMount:
    user: str
    leaf: str
    path: Path


class BindBackend:
    name = "bind"

    def __init__(
        self, *, storage_root: Path, staging_root: Path, work_root: Path, create_filesets: bool = True
    ) -> None:
        self.storage_root = Path(storage_root)
        self.staging_root = Path(staging_root)
        self.work_root = Path(work_root)
        self.create_filesets = create_filesets
        self._prepared = False

    def prepare(self) -> None:
        """Make staging_root a shared mount and work_root a private one (idempotent)."""
        for path, mode in ((self.storage_root, 0o711), (self.staging_root, 0o755), (self.work_root, 0o700)):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
        if mounts.propagation(self.work_root) != "private":
            mounts.make_own_mount(self.work_root, flag=mounts.MS_PRIVATE)
        if mounts.propagation(self.staging_root) != "shared":
            mounts.make_own_mount(self.staging_root, flag=mounts.MS_SHARED)
        self._prepared = True

    # -- paths ----------------------------------------------------------------------------
    def user_stage(self, user: str) -> Path:
        return user_stage(self.staging_root, user)

    def fileset_dir(self, fileset: str) -> Path:
        root = os.path.realpath(self.storage_root)
        path = os.path.realpath(self.storage_root / fileset)
        if not path.startswith(root + os.sep):
            raise MountError(f"fileset {fileset!r} resolves outside the storage root {root}")
        return Path(path)

    def container_volume(self, *, user: str, mount_parent: str) -> dict[str, dict[str, str]]:
        """The DockerSpawner ``volumes`` entry: the user's staging dir, read-only, rslave.

        Prepared before the container exists, so later mounts and unmounts propagate into it.
        """
        stage = self.user_stage(user)
        stage.mkdir(mode=0o755, parents=True, exist_ok=True)
        return staging_volume(self.staging_root, user=user, mount_parent=mount_parent)

    # -- mount / unmount --------------------------------------------------------------------
    def mount(self, grant: Grant, *, id_map: IdMap | None = None) -> ActiveMount:
        """Mount the grant's fileset on the user's staging directory; ``id_map``: the
        user's container mapping, through which the mount is idmapped (None: plain)."""
        if not self._prepared:
            self.prepare()
        source = self.fileset_dir(grant.fileset)
        if not source.exists():
            if not self.create_filesets:
                raise MountError(f"fileset {grant.fileset} does not exist under {self.storage_root}")
            source.mkdir(mode=0o700, parents=True)
            os.chown(source, grant.uid, grant.gid)
        target = self.user_stage(grant.user) / grant.mount_leaf
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        if mounts.is_mountpoint(target):
            mounts.unmount(target)
        if id_map is not None:
            idmapped_bind(source, target, id_map=id_map, read_only=grant.mode == "ro")
            return ActiveMount(grant.user, grant.mount_leaf, target)
        work = self.work_root / grant.serial
        work.mkdir(mode=0o700, exist_ok=True)
        read_only = grant.mode == "ro"
        try:
            mounts.bind(source, work, read_only=read_only)
            try:
                mounts.bind(work, target, read_only=read_only)
            finally:
                mounts.unmount(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return ActiveMount(grant.user, grant.mount_leaf, target)

    def unmount(self, *, user: str, leaf: str) -> bool:
        """Remove the user's mount; True if something was mounted."""
        target = self.user_stage(user) / leaf
        removed = False
        while mounts.is_mountpoint(target):
            mounts.unmount(target)
            removed = True
        return removed

    def active(self) -> list[ActiveMount]:
        """Every mount below staging_root/<user>/ (what the kernel says, not what we remember)."""
        root = os.path.realpath(self.staging_root) + os.sep
        found: dict[tuple[str, str], ActiveMount] = {}
        for point, _ in mounts.mountinfo():
            if point.startswith(root):
                parts = point[len(root) :].split(os.sep)
                if len(parts) == 2:
                    found[(parts[0], parts[1])] = ActiveMount(parts[0], parts[1], Path(point))
        return list(found.values())

    def teardown(self) -> None:
        """Unmount every user mount and the staging/work self-binds (tests, `jovial-guard up` exit)."""
        for mount in self.active():
            self.unmount(user=mount.user, leaf=mount.leaf)
        for path in (self.staging_root, self.work_root):
            while mounts.is_mountpoint(path):
                mounts.unmount(path)
        self._prepared = False
