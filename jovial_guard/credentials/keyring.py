"""Key-encryption keys (KEKs): a small plugin interface and the local-file implementation.

Grants are envelope-encrypted: each has its own fresh data key (DEK), and only the DEK is
encrypted ("wrapped") by a KEK. A :class:`KeyProvider` is anything that can wrap and unwrap
DEKs under named, versioned keys. :class:`LocalFileKeyring` keeps the KEKs in a JSON file
that must be private to its owner (mode 0600); a real KMS (Vault transit, AWS/GCP KMS, an
HSM through PKCS#11) plugs in by implementing the same four members, see docs/credentials.md.

Rotation: :meth:`LocalFileKeyring.rotate` adds a new key and makes it active. Grants sealed
under older keys stay readable (the keys stay in the file) until ``rewrap`` re-seals them,
after which an old key can be retired.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..atomic import atomic_write
from ..keyfile import check_private_file
from .errors import InvalidGrant, KeyringError

KEYRING_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
#: A wrapped DEK from LocalFileKeyring: version byte, nonce, AES-256-GCM(DEK) with its tag.
WRAP_VERSION = b"\x01"


@runtime_checkable
class KeyProvider(Protocol):
    """What the issuer needs from a key store. Implement this to plug in a KMS.

    ``context`` is authenticated (AES-GCM AAD / KMS "encryption context"): a wrapped DEK only
    unwraps for the grant it was made for. ``unwrap`` raises :class:`InvalidGrant` on any
    authentication failure and :class:`KeyringError` when the key id is unknown.
    """

    @property
    def active_key_id(self) -> str:
        """The key new grants are wrapped under."""
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Every key that can still unwrap."""
        ...

    def wrap(self, dek: bytes, *, context: bytes) -> tuple[str, bytes]:
        """Wrap ``dek`` under the active key; returns ``(key_id, wrapped)``."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """Unwrap a DEK wrapped under ``key_id``."""
        ...


class LocalFileKeyring:
    """Versioned AES-256 KEKs in a private JSON file.

    File format (version first)::

        {"version": 1, "active": "k2",
         "keys": {"k1": {"created": 1764200000, "key": "<base64 32 bytes>"}, "k2": {...}}}
    """

    def __init__(self, path: Path, *, randbytes: Callable[[int], bytes] = os.urandom) -> None:
        self.path = Path(path)
        self._randbytes = randbytes
        self._keys: dict[str, bytes] = {}
        self._created: dict[str, int] = {}
        self._active = ""
        self._aead: dict[str, AESGCM] = {}
        self.reload()

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, *, randbytes: Callable[[int], bytes] = os.urandom, now: int | None = None
    ) -> LocalFileKeyring:
        """Write a new keyring with one key (``k1``); refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise KeyringError(f"key file {path} already exists; use `jovial-guard creds rotate-key` to add a key")
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": KEYRING_VERSION,
            "active": "k1",
            "keys": {
                "k1": {
                    "created": int(time.time() if now is None else now),
                    "key": base64.b64encode(randbytes(KEY_BYTES)).decode(),
                }
            },
        }
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)
        return cls(path, randbytes=randbytes)

    def reload(self) -> None:
        if not self.path.exists():
            raise KeyringError(f"key file {self.path} does not exist (create one with `jovial-guard creds init`)")
        check_private_file(self.path)
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("version") != KEYRING_VERSION:
                raise KeyringError(
                    f"key file {self.path}: unsupported version {doc.get('version')!r} (expected {KEYRING_VERSION})"
                )
            keys = {}
            created = {}
            for key_id, entry in doc["keys"].items():
                raw = base64.b64decode(entry["key"], validate=True)
                if len(raw) != KEY_BYTES or not _valid_key_id(key_id):
                    raise KeyringError(f"key file {self.path}: key {key_id!r} is not a 32-byte AES key with a short id")
                keys[key_id] = raw
                created[key_id] = int(entry.get("created", 0))
            active = doc["active"]
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"key file {self.path} is malformed: {type(exc).__name__}: {exc}") from None
        if active not in keys:
            raise KeyringError(f"key file {self.path}: active key {active!r} is not in the file")
        self._keys, self._created, self._active = keys, created, active
        self._aead = {k: AESGCM(v) for k, v in keys.items()}

    def _save(self) -> None:
        doc = {
            "version": KEYRING_VERSION,
            "active": self._active,
            "keys": {
                k: {"created": self._created[k], "key": base64.b64encode(v).decode()}
                for k, v in sorted(self._keys.items())
            },
        }
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)

    # -- rotation -------------------------------------------------------------------------
    def rotate(self, *, now: int | None = None) -> str:
        """Add a new key and make it active; returns its id. Old keys stay for unwrapping."""
        number = 1 + max((int(k[1:]) for k in self._keys if k[1:].isdigit()), default=0)
        key_id = f"k{number}"
        self._keys[key_id] = self._randbytes(KEY_BYTES)
        self._created[key_id] = int(time.time() if now is None else now)
        self._active = key_id
        self._aead[key_id] = AESGCM(self._keys[key_id])
        self._save()
        return key_id

    def retire(self, key_id: str) -> None:
        """Remove a key that no grant uses any more (the caller checks that: see Issuer.retire_key)."""
        if key_id == self._active:
            raise KeyringError(f"key {key_id} is the active key; rotate first")
        if key_id not in self._keys:
            raise KeyringError(f"no key {key_id!r}; keys: {', '.join(self.key_ids())}")
        del self._keys[key_id], self._created[key_id], self._aead[key_id]
        self._save()

    def created(self, key_id: str) -> int:
        return self._created[key_id]

    # -- KeyProvider ------------------------------------------------------------------
    @property
    def active_key_id(self) -> str:
        return self._active

    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys, key=lambda k: (len(k), k)))

    def wrap(self, dek: bytes, *, context: bytes) -> tuple[str, bytes]:
        key_id = self._active
        nonce = self._randbytes(NONCE_BYTES)
        return key_id, WRAP_VERSION + nonce + self._aead[key_id].encrypt(nonce, dek, _wrap_aad(key_id, context))

    def unwrap(self, key_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        aead = self._aead.get(key_id)
        if aead is None:
            raise KeyringError(f"key {key_id!r} is not in {self.path} (retired, or a grant from another keyring)")
        if len(wrapped) < 1 + NONCE_BYTES + 16 or wrapped[:1] != WRAP_VERSION:
            raise InvalidGrant()
        try:
            return aead.decrypt(wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :], _wrap_aad(key_id, context))
        except InvalidTag:
            raise InvalidGrant() from None


def _wrap_aad(key_id: str, context: bytes) -> bytes:
    return b"jovial-guard/kek-wrap/v1\x00" + key_id.encode() + b"\x00" + context


def _valid_key_id(key_id: object) -> bool:
    return (
        isinstance(key_id, str)
        and 0 < len(key_id) <= 32
        and key_id.replace("-", "").replace("_", "").isalnum()
        and key_id.isascii()
    )
