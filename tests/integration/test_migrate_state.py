"""An older installation's state under the cache is moved into the state directory once.

Built as the older layout left it: the hub's directory, the ``creds`` CLI's directories and
an engine storage with a home volume holding a file, all under the cache. After the move the
files are in the state directory, the volume's file is in the new engine storage, a second
run moves nothing, and nothing already in the state directory is overwritten.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jovial_guard.runtime.podman import PodmanService
from jovial_guard.spawn.migrate import migrate_cache_state


def _podman(service: PodmanService, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run(service.podman_args() + list(args), input=stdin, capture_output=True, check=True)
    return proc.stdout.decode()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Short run-time directories: podman refuses a runroot longer than 50 characters."""
    path = Path(tempfile.mkdtemp(prefix="jgmig-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_state_in_the_cache_moves_once_and_never_overwrites(tmp_path: Path, run_dir: Path,
                                                             unmount_below: None) -> None:
    cache, state = tmp_path / "cache", tmp_path / "state"
    (cache / "hub" / "policy-store").mkdir(parents=True)
    (cache / "hub" / "jupyterhub.sqlite").write_bytes(b"hub database")
    (cache / "hub" / "policy-store" / "history.jsonl").write_text('{"seq": 1}\n')
    (cache / "credentials" / "keys").mkdir(parents=True)
    (cache / "credentials" / "keys" / "kek.json").write_text("{}")
    old_runroot = run_dir / "old"
    old = PodmanService(tmp_path / "old.sock", root=cache / "podman" / "root", runroot=old_runroot)
    old.write_config()
    _podman(old, "volume", "create", "jovial-guard-home-ada")
    archive = tmp_path / "home.tar"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("ada's notes\n")
    subprocess.run(["tar", "-C", str(tmp_path / "home"), "-cf", str(archive), "notes.txt"], check=True)
    _podman(old, "volume", "import", "jovial-guard-home-ada", str(archive))
    new = PodmanService(tmp_path / "new.sock", root=state / "engine" / "root", runroot=run_dir / "new")
    messages: list[str] = []

    moved = migrate_cache_state(cache=cache, hub_state=state / "hub", engine=new,
                                progress=messages.append, old_runroot=old_runroot)

    assert (state / "hub" / "jupyterhub.sqlite").read_bytes() == b"hub database"
    assert (state / "hub" / "policy-store" / "history.jsonl").read_text() == '{"seq": 1}\n'
    assert (state / "hub" / "credentials-keys" / "kek.json").read_text() == "{}"
    assert not (cache / "hub").exists()
    assert len(moved) == 3 and len(messages) == 3
    assert all(m.startswith("state: moved ") for m in messages)
    mountpoint = _podman(new, "volume", "inspect", "--format", "{{.Mountpoint}}", "jovial-guard-home-ada").strip()
    assert (Path(mountpoint) / "notes.txt").read_text() == "ada's notes\n"

    (cache / "hub").mkdir()
    (cache / "hub" / "jupyterhub.sqlite").write_bytes(b"stale copy")
    assert migrate_cache_state(cache=cache, hub_state=state / "hub", engine=new,
                               progress=messages.append, old_runroot=old_runroot) == []
    assert (state / "hub" / "jupyterhub.sqlite").read_bytes() == b"hub database"
