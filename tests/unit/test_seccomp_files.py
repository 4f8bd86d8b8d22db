"""The seccomp file a spawn gets: validated once, reused while unchanged, refused once weakened."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jovial_guard.decision import ProfileRef
from jovial_guard.spawn.refusals import SpawnRefused
from jovial_guard.spawn.seccomp_files import SeccompFiles

REPO = Path(__file__).resolve().parents[2]
REF = ProfileRef(type="Localhost", localhost_profile="jovial-guard/notebook.json")


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    shutil.copy(REPO / "profiles" / "seccomp" / "notebook.json", folder / "notebook.json")
    return folder


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    yield path
    listener.close()


def _weaken(path: Path) -> None:
    """Replace the profile with one that allows mount (what notebooks must never call)."""
    doc = json.loads(path.read_text())
    doc["syscalls"].append({"names": ["mount"], "action": "SCMP_ACT_ALLOW"})
    tmp = path.with_suffix(".new")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_the_same_file_is_reused_and_a_weakened_profile_is_refused(profile_dir: Path) -> None:
    files = SeccompFiles(profile_dir=str(profile_dir))
    first = files.file_for(REF)
    assert first == str(profile_dir / "notebook.json")
    assert files.file_for(REF) == first
    _weaken(profile_dir / "notebook.json")
    with pytest.raises(SpawnRefused, match="allows mount"):
        files.file_for(REF)
    with pytest.raises(SpawnRefused, match="allows mount"):  # a refusal is never cached
        files.file_for(REF)


def test_the_audited_file_is_written_again_when_removed_or_edited(profile_dir: Path, agent: Path,
                                                                   tmp_path: Path) -> None:
    files = SeccompFiles(profile_dir=str(profile_dir), agent_socket=str(agent),
                         audited_dir=str(tmp_path / "audited"))
    audited = Path(files.file_for(REF))
    written = audited.read_text()
    assert json.loads(written)["listenerPath"] == str(agent)
    assert files.file_for(REF) == str(audited)
    audited.unlink()
    assert files.file_for(REF) == str(audited) and audited.read_text() == written
    audited.write_text(written.replace("SCMP_ACT_NOTIFY", "SCMP_ACT_ALLOW"))
    assert files.file_for(REF) == str(audited) and audited.read_text() == written
    _weaken(profile_dir / "notebook.json")
    with pytest.raises(SpawnRefused, match="allows mount"):
        files.file_for(REF)


def test_a_vanished_agent_refuses_even_with_a_cached_file(profile_dir: Path, agent: Path,
                                                          tmp_path: Path) -> None:
    files = SeccompFiles(profile_dir=str(profile_dir), agent_socket=str(agent),
                         audited_dir=str(tmp_path / "audited"))
    files.file_for(REF)
    agent.unlink()
    with pytest.raises(SpawnRefused, match="seccomp audit agent is not running"):
        files.file_for(REF)
