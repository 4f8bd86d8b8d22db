"""Move state an older installation kept under the cache into the state directory, once.

Earlier versions kept the hub's directory (database, policy store and history, audit log
and signing key, credentials and their keys, decision log), the simulated Lustre filesets
and the engine's storage (users' home volumes) under ``~/.cache/jovial_guard``. Deleting a
cache must never lose data, so ``up`` moves each of these once, says so, and never
overwrites anything already in the state directory. Home volumes are copied through
podman's own ``volume export``/``volume import`` (an engine's storage cannot be moved by
renaming: its database records its paths); the old engine storage is then only cache.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import JovialGuardError
from ..runtime.podman import RUN_DIR, PodmanService

Progress = Callable[[str], None]

#: The run-time directory the older layout's engine storage recorded in its database.
OLD_RUNROOT = RUN_DIR / "podman"

#: Old location (relative to the cache) -> new location (relative to the hub's state).
_MOVES = (
    ("hub", "."),
    ("lustre-sim", "../lustre-sim"),
    ("credentials/state", "credentials"),
    ("credentials/keys", "credentials-keys"),
    ("credentials/agent", "credentials-agent"),
)


class MigrationFailed(JovialGuardError):
    """State could not be moved out of the cache; nothing was deleted."""


def migrate_cache_state(*, cache: Path, hub_state: Path, engine: PodmanService,
                        progress: Progress, old_runroot: Path = OLD_RUNROOT) -> list[str]:
    """Move what the cache holds of state; return one line per thing moved."""
    moved: list[str] = []
    for old_rel, new_rel in _MOVES:
        old = cache / old_rel
        new = (hub_state / new_rel).resolve() if new_rel != "." else hub_state
        if not old.is_dir() or _has_content(new):
            continue
        new.parent.mkdir(parents=True, exist_ok=True)
        if new.exists():
            new.rmdir()
        shutil.move(str(old), str(new))
        moved.append(f"{old} -> {new}")
    moved += _migrate_volumes(cache / "podman" / "root", old_runroot, engine)
    for line in moved:
        progress(f"state: moved {line} (state no longer lives in the cache)")
    return moved


def _has_content(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _migrate_volumes(old_root: Path, old_runroot: Path, engine: PodmanService) -> list[str]:
    """Copy every volume of the old engine storage that the new one lacks."""
    if not (old_root / "volumes").is_dir():
        return []
    with tempfile.TemporaryDirectory(prefix="jovial-guard-migrate-") as tmp:
        old = PodmanService(Path(tmp) / "old.sock", root=old_root, runroot=old_runroot)
        old.write_config()
        engine.write_config()
        names = _podman(old, ["volume", "ls", "--format", "{{.Name}}"]).split()
        present = set(_podman(engine, ["volume", "ls", "--format", "{{.Name}}"]).split())
        moved = []
        for name in names:
            if name in present:
                continue
            archive = Path(tmp) / f"{name}.tar"
            _podman(old, ["volume", "export", name, "--output", str(archive)])
            _podman(engine, ["volume", "create", name])
            _podman(engine, ["volume", "import", name, str(archive)])
            archive.unlink()
            moved.append(f"home volume {name} ({old_root} -> {engine.root})")
        return moved


def _podman(service: PodmanService, args: list[str]) -> str:
    proc = subprocess.run(service.podman_args() + args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MigrationFailed(
            f"moving home volumes out of the cache failed at `podman {' '.join(args)}`: "
            f"{proc.stderr.strip()[-500:]}; nothing was deleted"
        )
    return proc.stdout
