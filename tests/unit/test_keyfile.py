"""Key files: created private and atomically, refused when others could read or swap them.

Every key the project keeps goes through ``jovial_guard.keyfile``; the last tests check that
each of the four users (issuer, node agent, bundle signer, audit checkpoints) gets the same
refusals, so none of them can drift back to its own weaker copy.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jovial_guard import keyfile
from jovial_guard.audit.checkpoint import load_or_create_key
from jovial_guard.credentials.delivery import load_or_create_agent_key, load_or_create_signing_key
from jovial_guard.errors import Misconfigured
from jovial_guard.keyfile import KeyFileError, KeyFilePermissions
from jovial_guard.policy.bundles import SigningKey


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("kind", "key_type"), [
    ("ed25519", Ed25519PrivateKey), ("x25519", X25519PrivateKey), ("p256", ec.EllipticCurvePrivateKey),
])
def test_created_private_with_public_beside_it(tmp_path: Path, kind: keyfile.Kind, key_type: type) -> None:
    path = tmp_path / "keys" / "signing.key"
    key = keyfile.load_or_create(path, kind)
    assert isinstance(key, key_type)
    assert _mode(path) == 0o600
    assert _mode(path.with_suffix(".pub")) == 0o644
    assert path.with_suffix(".pub").read_bytes() == keyfile.public_pem(key)
    again = keyfile.load_or_create(path, kind)
    assert keyfile.public_pem(again) == keyfile.public_pem(key)
    assert sorted(p.name for p in path.parent.iterdir()) == ["signing.key", "signing.pub"]  # no temp files left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_loose_permissions_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "signing.key"
    keyfile.load_or_create(path, "ed25519")
    path.chmod(mode)
    with pytest.raises(KeyFilePermissions, match=rf"mode {mode:04o}.*chmod 600 {path}$"):
        keyfile.load_or_create(path, "ed25519")


def test_foreign_owner_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    keyfile.load_or_create(path, "ed25519")
    os.chown(path, 12345, 12345)
    with pytest.raises(KeyFilePermissions, match=rf"owned by uid 12345.*chmod 600 {path}"):
        keyfile.load_or_create(path, "ed25519")


def test_not_a_regular_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        keyfile.load_or_create(path, "ed25519")


def test_dangling_symlink_is_not_replaced_by_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        keyfile.load_or_create(path, "ed25519")
    assert not (tmp_path / "elsewhere.key").exists()


def test_wrong_key_type_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    keyfile.load_or_create(path, "ed25519")
    with pytest.raises(KeyFileError, match="not a X25519 private key"):
        keyfile.load_or_create(path, "x25519")


def test_wrong_curve_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="secp384r1"):
        keyfile.load_or_create(path, "p256")


def test_garbage_refused_without_traceback_worthy_errors(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        keyfile.load_or_create(path, "ed25519")


def test_missing_public_key_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    key = keyfile.load_or_create(path, "ed25519")
    path.with_suffix(".pub").unlink()
    keyfile.load_or_create(path, "ed25519")
    assert path.with_suffix(".pub").read_bytes() == keyfile.public_pem(key)


def test_refusals_are_misconfigurations() -> None:
    assert issubclass(KeyFilePermissions, Misconfigured)
    assert (KeyFilePermissions.http_status, KeyFilePermissions.exit_code) == (503, 2)


def _bundle_signer(path: Path) -> object:
    return SigningKey.load_or_create(path.parent)


LOADERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "issuer": ("issuer-signing.key", load_or_create_signing_key),
    "agent": ("agent.key", load_or_create_agent_key),
    "bundle-signer": ("signing.key", _bundle_signer),
    "audit-checkpoints": ("signing.key", load_or_create_key),
}


@pytest.mark.parametrize("who", sorted(LOADERS))
def test_every_key_user_refuses_loose_permissions(tmp_path: Path, who: str) -> None:
    name, load = LOADERS[who]
    path = tmp_path / "keys" / name
    load(path)
    assert _mode(path) == 0o600
    assert _mode(path.with_suffix(".pub")) == 0o644
    path.chmod(0o644)
    with pytest.raises(KeyFilePermissions, match=f"chmod 600 {path}"):
        load(path)


@pytest.mark.parametrize("who", sorted(LOADERS))
def test_every_key_user_refuses_a_foreign_owner(tmp_path: Path, who: str) -> None:
    name, load = LOADERS[who]
    path = tmp_path / "keys" / name
    load(path)
    os.chown(path, 12345, 12345)
    with pytest.raises(KeyFilePermissions, match="owned by uid 12345"):
        load(path)


def test_webhook_ca_key_is_checked_before_reuse(tmp_path: Path) -> None:
    from jovial_guard.admission.tls import write_webhook_certs

    paths = write_webhook_certs(tmp_path, dns_names=["localhost"])
    assert _mode(paths.ca_key) == 0o600 and _mode(paths.key) == 0o600
    paths.ca_key.chmod(0o640)
    with pytest.raises(KeyFilePermissions, match=f"chmod 600 {paths.ca_key}"):
        write_webhook_certs(tmp_path, dns_names=["localhost"])
