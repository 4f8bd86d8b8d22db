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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .atomic import atomic_write
from .errors import Misconfigured

PrivateKey = Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey
#: The kinds of key the project keeps: issuer and audit signing keys, agent keys, bundle signing.
Kind = Literal["ed25519", "x25519", "p256"]

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


@dataclass(frozen=True)
class _Kind:
    cls: type
    generate: Callable[[], PrivateKey]
    label: str


_KINDS: dict[str, _Kind] = {
    "ed25519": _Kind(Ed25519PrivateKey, Ed25519PrivateKey.generate, "Ed25519 private key"),
    "x25519": _Kind(X25519PrivateKey, X25519PrivateKey.generate, "X25519 private key"),
    "p256": _Kind(ec.EllipticCurvePrivateKey, lambda: ec.generate_private_key(ec.SECP256R1()), "EC P-256 private key"),
}


@overload
def load_private_key(path: Path, kind: Literal["ed25519"], *, missing_hint: str = "") -> Ed25519PrivateKey: ...
@overload
def load_private_key(path: Path, kind: Literal["x25519"], *, missing_hint: str = "") -> X25519PrivateKey: ...
@overload
def load_private_key(path: Path, kind: Literal["p256"], *, missing_hint: str = "") -> ec.EllipticCurvePrivateKey: ...
def load_private_key(path: Path, kind: Kind, *, missing_hint: str = "") -> PrivateKey:
    """Load a private key of ``kind`` after :func:`check_private_file` accepted the file."""
    path = Path(path)
    expected = _KINDS[kind]
    check_private_file(path, missing_hint=missing_hint)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key file {path}: not a PEM private key ({exc})") from None
    if not isinstance(loaded, expected.cls):
        raise KeyFileError(f"key file {path} holds a {type(loaded).__name__.lstrip('_')}, not a {expected.label}")
    if isinstance(loaded, ec.EllipticCurvePrivateKey) and not isinstance(loaded.curve, ec.SECP256R1):
        raise KeyFileError(f"key file {path} holds an EC key on {loaded.curve.name}, not a {expected.label}")
    if not isinstance(loaded, Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"key file {path} holds a {type(loaded).__name__}, not a {expected.label}")
    return loaded


@overload
def load_or_create(path: Path, kind: Literal["ed25519"]) -> Ed25519PrivateKey: ...
@overload
def load_or_create(path: Path, kind: Literal["x25519"]) -> X25519PrivateKey: ...
@overload
def load_or_create(path: Path, kind: Literal["p256"]) -> ec.EllipticCurvePrivateKey: ...
def load_or_create(path: Path, kind: Kind) -> PrivateKey:
    """The private key of ``kind`` at ``path``, created (0600, with its ``.pub``) on first use.

    An existing file is checked exactly as :func:`load_private_key` checks it; a missing
    public key beside an existing private key is written again.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        key = _KINDS[kind].generate()
        write_private_key(path, key)
        return key
    key = load_private_key(path, kind)
    if not public_path(path).exists():
        write_public_key(public_path(path), public_pem(key))
    return key


__all__ = [
    "Kind",
    "KeyFileError",
    "KeyFilePermissions",
    "PrivateKey",
    "check_private_file",
    "load_or_create",
    "load_private_key",
    "public_path",
    "public_pem",
    "write_private_key",
    "write_public_key",
]
