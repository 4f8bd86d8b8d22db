"""The seccomp profiles a node needs, and their installation into the kubelet's directory.

The kubelet resolves ``localhostProfile: jovial-guard/notebook.json`` against
``<kubelet root>/seccomp/``; the agent owns the ``jovial-guard/`` directory under it. Each
profile is validated before it is installed (a profile that lets a notebook unshare, mount or
ptrace is refused, as in the embedded engine), resolved for the node's architecture, and
replaced atomically, so the kubelet reads either the old or the new file, never a torn one.

Why resolved: containerd reads a ``Localhost`` profile as the OCI spec's ``LinuxSeccomp``,
which has no per-architecture conditions, so every architecture's rules would apply at once
(threads could not start, and the s390 ``clone`` rule would let namespace flags through).
The installed file holds only the rules of this node's architecture, without conditions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from ..atomic import atomic_write, sync_directory
from ..errors import Misconfigured
from ..hardening.seccomp import SeccompProfileInvalid, notebook_profile_path, render, validate_profile_dir
from ..hardening.seccomp_oci import for_architecture, node_architecture

#: The kubelet's default root directory.
DEFAULT_KUBELET_ROOT = Path("/var/lib/kubelet")
#: Where the agent's profiles live, relative to the kubelet root (pods name them as
#: ``jovial-guard/<file>``).
PROFILE_SUBDIR = Path("seccomp") / "jovial-guard"


class ProfileInstallFailed(Misconfigured):
    """The profiles could not be written into the kubelet's directory, or did not stay there."""


def default_source_dir() -> Path:
    """The project's committed profiles (``profiles/seccomp/``)."""
    return notebook_profile_path().parent


def load_profiles(source: Path, *, arch: str | None = None) -> dict[str, bytes]:
    """Every ``*.json`` profile in ``source``, validated, resolved for ``arch`` (default: this
    machine's) as the bytes to install; refuses an empty or weak set."""
    if not (source.is_dir() and any(source.glob("*.json"))):
        raise SeccompProfileInvalid(f"no seccomp profiles (*.json) in {source}: give --profiles-dir")
    target = arch or node_architecture()
    return {file.name: render(for_architecture(json.loads(file.read_bytes()), arch=target)).encode()
            for file in validate_profile_dir(source).values()}


def digest(profiles: Mapping[str, bytes]) -> str:
    """One hex digest of the whole set (names and contents), recorded on the node."""
    h = hashlib.sha256()
    for name in sorted(profiles):
        h.update(name.encode() + b"\0" + hashlib.sha256(profiles[name]).digest())
    return h.hexdigest()


def target_dir(kubelet_root: Path) -> Path:
    return kubelet_root / PROFILE_SUBDIR


def drift(profiles: Mapping[str, bytes], kubelet_root: Path) -> list[str]:
    """Names of profiles that are missing from the node or differ from the source."""
    directory = target_dir(kubelet_root)
    out = []
    for name, data in sorted(profiles.items()):
        try:
            if (directory / name).read_bytes() != data:
                out.append(name)
        except OSError:
            out.append(name)
    return out


def install(profiles: Mapping[str, bytes], kubelet_root: Path) -> list[str]:
    """Write the profiles that differ; returns their names. Raises ProfileInstallFailed."""
    directory = target_dir(kubelet_root)
    changed = drift(profiles, kubelet_root)
    if not changed:
        return []
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name in changed:
            atomic_write(directory / name, profiles[name], mode=0o644, sync_dir=False)
        sync_directory(directory)
    except OSError as exc:
        raise ProfileInstallFailed(f"cannot install seccomp profiles into {directory}: {exc}") from exc
    return changed
