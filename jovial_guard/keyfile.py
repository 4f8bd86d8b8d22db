"""Private key files: load one, or create it on first use, and refuse one others could use.

Every key the project keeps on disk goes through here: the credentials issuer's Ed25519
signing key, a node agent's X25519 key, the policy store's ES256 bundle-signing key and the
audit log's Ed25519 checkpoint key. One set of rules for all of them:

* created with mode 0600 and written atomically (a crash leaves the old file or none, never
  half a key), its public key beside it as ``.pub`` (0644, also atomic);
* refused before it is read when group or others may read or write it, when it is not a
  regular file, or when another uid owns it (root's key must not be swapped by a user who
  owns the directory). The message names the file and the command that fixes it
  (``chmod 600 PATH``);
* refused when it holds a different kind of key than the caller expects.

Refusals raise :class:`KeyFilePermissions` or :class:`KeyFileError`, both misconfigurations:
the operator fixes the file, a user cannot.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .atomic import atomic_write
from .errors import Misconfigured

PrivateKey = Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey
K = TypeVar("K", Ed25519PrivateKey, X25519PrivateKey, ec.EllipticCurvePrivateKey)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(Misconfigured):
    """A key file is missing where it must exist, unreadable, or not the expected key."""


class KeyFilePermissions(KeyFileError):
    """A key file others may read or write, or one owned by another uid; refused unread."""


def check_private_file(path: Path, *, missing_hint: str = "") -> os.stat_result:
    """Refuse a key file that group or others may read or write, or that someone else owns.

    ``missing_hint`` is appended to the message when the file does not exist (for example
    the command that creates it).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist" + (f" ({missing_hint})" if missing_hint else "")) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFilePermissions(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to use it. Restrict it with: chmod 600 {path}"
        )
    if st.st_uid != os.geteuid():
        raise KeyFilePermissions(
            f"key file {path} is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()}); "
            f"refusing to use it. Fix with: chown {os.geteuid()} {path} && chmod 600 {path}"
        )
    return st


def public_path(path: Path) -> Path:
    """Where the public half of the key at ``path`` lives (``signing.key`` -> ``signing.pub``)."""
    return Path(path).with_suffix(".pub")


def public_pem(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of ``key``'s public half."""
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_public_key(path: Path, pem: bytes) -> None:
    """Write a public key PEM atomically, mode 0644."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), pem, mode=PUBLIC_MODE)


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` (PKCS#8 PEM) atomically with mode 0600, and its public key as ``.pub``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(path, raw, mode=PRIVATE_MODE)
    write_public_key(public_path(path), public_pem(key))


def load_private_key(path: Path, key_type: type[K], *, missing_hint: str = "") -> K:
    """Load a private key of ``key_type`` after :func:`check_private_file` accepted the file."""
    path = Path(path)
    check_private_file(path, missing_hint=missing_hint)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key file {path}: not a PEM private key ({exc})") from None
    if not isinstance(loaded, key_type):
        raise KeyFileError(f"key file {path} holds a {type(loaded).__name__.lstrip('_')}, not a {_label(key_type)}")
    if isinstance(loaded, ec.EllipticCurvePrivateKey) and not isinstance(loaded.curve, ec.SECP256R1):
        raise KeyFileError(f"key file {path} holds an EC key on {loaded.curve.name}, not a {_label(key_type)}")
    return loaded


def load_or_create(path: Path, key_type: type[K]) -> K:
    """The private key at ``path``, created (0600, with its ``.pub``) on first use.

    An existing file is checked exactly as :func:`load_private_key` checks it; a missing
    public key beside an existing private key is written again.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        key = _generate(key_type)
        write_private_key(path, key)
        return key
    key = load_private_key(path, key_type)
    if not public_path(path).exists():
        write_public_key(public_path(path), public_pem(key))
    return key


def _generate(key_type: type[K]) -> K:
    if key_type is ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())  # type: ignore[return-value]
    return key_type.generate()  # type: ignore[union-attr,no-any-return]


def _label(key_type: type[PrivateKey]) -> str:
    return {
        Ed25519PrivateKey: "Ed25519 private key",
        X25519PrivateKey: "X25519 private key",
        ec.EllipticCurvePrivateKey: "EC P-256 private key",
    }.get(key_type, key_type.__name__)


__all__ = [
    "KeyFileError",
    "KeyFilePermissions",
    "check_private_file",
    "load_or_create",
    "load_private_key",
    "public_path",
    "public_pem",
    "write_private_key",
    "write_public_key",
]
