"""The node agent with the real ``bind`` backend: real mounts in a temporary directory (root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jovial_guard.credentials import errors
from jovial_guard.credentials.agent import NodeAgent
from jovial_guard.credentials.backends import mounts
from jovial_guard.credentials.backends.bind import BindBackend
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.credentials.keyring import LocalFileKeyring
from jovial_guard.credentials.revocation import RevocationList
from jovial_guard.credentials.store import GrantStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")

NOW = 1_764_230_400
ALICE: dict[str, Any] = dict(
    user="alice", uid=1000, gid=100, fileset="home/alice", mode="rw", mount_path="/lustre/home"
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return float(self.now)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def setup(tmp_path: Path, clock: Clock) -> Iterator[tuple[Issuer, NodeAgent, BindBackend]]:
    (tmp_path / "keys").mkdir(mode=0o700)
    issuer = Issuer(
        keyring=LocalFileKeyring.create(tmp_path / "keys" / "kek.json"),
        store=GrantStore(tmp_path / "state" / "grants"),
        revocations=RevocationList(tmp_path / "state" / "revoked.json"),
        signer=Ed25519PrivateKey.generate(),
        lifetime=3600,
        clock=clock,
    )
    backend = BindBackend(
        storage_root=tmp_path / "lustre", staging_root=tmp_path / "staging", work_root=tmp_path / "work"
    )
    agent = NodeAgent(
        agent_id="node-1",
        private_key=X25519PrivateKey.generate(),
        issuer_key=issuer.signer.public_key(),
        revocations=issuer.revocations,
        backend=backend,
        clock=clock,
    )
    issuer.listeners.append(agent.on_revoked)
    try:
        yield issuer, agent, backend
    finally:
        backend.teardown()
        assert not any(str(tmp_path) in point for point, _ in mounts.mountinfo())


def _deliver(issuer: Issuer, agent: NodeAgent, **over: Any) -> Any:
    issued = issuer.issue(**{**ALICE, **over})
    return issued, issuer.seal_for(issued.grant, agent_key=agent.public_key, agent_id=agent.agent_id)


def test_mount_rw_with_users_uid(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    issuer, agent, backend = setup
    _, sealed = _deliver(issuer, agent)
    agent.accept(sealed, user="alice")
    fileset = tmp_path / "lustre" / "home" / "alice"
    st = fileset.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 100, 0o700)
    staged = tmp_path / "staging" / "alice" / "home"
    assert mounts.is_mountpoint(staged)
    (staged / "result.fits").write_text("data")
    assert (fileset / "result.fits").read_text() == "data"
    assert mounts.propagation(tmp_path / "staging") == "shared"


def test_mount_ro_is_read_only_even_for_root(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    issuer, agent, _ = setup
    (tmp_path / "lustre" / "projects" / "astro").mkdir(parents=True)
    (tmp_path / "lustre" / "projects" / "astro" / "catalog.csv").write_text("ra,dec\n")
    _, sealed = _deliver(issuer, agent, fileset="projects/astro", mode="ro", mount_path="/lustre/project")
    agent.accept(sealed, user="alice")
    staged = tmp_path / "staging" / "alice" / "project"
    assert (staged / "catalog.csv").read_text() == "ra,dec\n"
    with pytest.raises(OSError) as info:
        (staged / "new").write_text("x")
    assert info.value.errno == errno.EROFS


def test_revocation_unmounts_now(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    issuer, agent, _ = setup
    issued, sealed = _deliver(issuer, agent)
    agent.accept(sealed, user="alice")
    staged = tmp_path / "staging" / "alice" / "home"
    (staged / "x").write_text("1")
    issuer.revoke(serial=issued.grant.serial, reason="audit responder")
    assert not mounts.is_mountpoint(staged)
    assert list(staged.iterdir()) == []
    with pytest.raises(errors.GrantRevoked, match="audit responder"):
        agent.accept(sealed, user="alice")
    assert not mounts.is_mountpoint(staged)


def test_revocation_from_another_process_is_swept(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    issuer, agent, _ = setup
    issued, sealed = _deliver(issuer, agent)
    agent.accept(sealed, user="alice")
    other = Issuer(
        keyring=issuer.keyring,
        store=issuer.store,
        revocations=RevocationList(tmp_path / "state" / "revoked.json"),
        signer=issuer.signer,
    )
    other.revoke(user="alice", reason="from the CLI")  # this issuer has no listener
    assert mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    assert agent.sweep() == ["alice"]
    assert not mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")


def test_expired_grant_refused_and_swept(
    setup: tuple[Issuer, NodeAgent, BindBackend], clock: Clock, tmp_path: Path
) -> None:
    issuer, agent, _ = setup
    _, sealed = _deliver(issuer, agent)
    agent.accept(sealed, user="alice")
    clock.now += 3600
    assert agent.sweep() == ["alice"]
    assert not mounts.is_mountpoint(tmp_path / "staging" / "alice" / "home")
    with pytest.raises(errors.GrantExpired):
        agent.accept(sealed, user="alice")


def test_grant_for_another_user_refused(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    issuer, agent, _ = setup
    _, sealed = _deliver(issuer, agent)
    with pytest.raises(errors.GrantWrongUser):
        agent.accept(sealed, user="bob")
    assert agent.active() == []


def test_tampered_or_foreign_delivery_refused(setup: tuple[Issuer, NodeAgent, BindBackend]) -> None:
    issuer, agent, _ = setup
    issued, sealed = _deliver(issuer, agent)
    tampered = bytearray(sealed)
    tampered[-5] ^= 1
    with pytest.raises(errors.InvalidGrant, match="^invalid grant$"):
        agent.accept(bytes(tampered), user="alice")
    foreign = issuer.seal_for(issued.grant, agent_key=X25519PrivateKey.generate().public_key(), agent_id="node-1")
    with pytest.raises(errors.InvalidGrant):
        agent.accept(foreign, user="alice")
    assert agent.active() == []


def test_unaccounted_mount_is_swept(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    _, agent, backend = setup
    backend.prepare()
    rogue = tmp_path / "staging" / "mallory" / "home"
    rogue.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    mounts.bind(tmp_path / "elsewhere", rogue, read_only=False)
    assert agent.sweep() == ["mallory"]
    assert not mounts.is_mountpoint(rogue)


def test_fileset_symlink_out_of_storage_root_refused(
    setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path
) -> None:
    issuer, agent, _ = setup
    (tmp_path / "lustre" / "home").mkdir(parents=True)
    (tmp_path / "lustre" / "home" / "alice").symlink_to("/etc")
    _, sealed = _deliver(issuer, agent)
    with pytest.raises(errors.MountError, match="outside the storage root"):
        agent.accept(sealed, user="alice")


def test_container_volume_is_read_only_rslave(setup: tuple[Issuer, NodeAgent, BindBackend], tmp_path: Path) -> None:
    _, _, backend = setup
    volume = backend.container_volume(user="alice", mount_parent="/lustre")
    assert volume == {str(tmp_path / "staging" / "alice"): {"bind": "/lustre", "mode": "ro", "propagation": "rslave"}}
