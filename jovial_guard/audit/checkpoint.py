"""Signed checkpoints: an Ed25519 signature over the Merkle root of the log so far.

A checkpoint line is ``v1 <JSON>`` with the tree ``size``, its RFC 6962 ``root``, the chain
``head`` (hash of record ``size``), the ``frontier`` (compact range, so a restarted writer
resumes without re-reading the log), where record ``size`` ends (``file``, ``offset``), a
timestamp, the signing ``key_id`` and the ``sig``. The signature covers every other field
(canonical JSON, sorted keys) behind a domain-separation prefix. Without the private key a
checkpoint cannot be forged, and a rewritten log no longer matches the signed roots.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .. import keyfile
from ..errors import MalformedInput

SIGNING_CONTEXT = b"jovial-guard audit checkpoint v1\n"


class InvalidCheckpoint(MalformedInput):
    """A checkpoint line that does not parse, whose signature is invalid, or a key that is not Ed25519."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Create a new signing key file (0600, atomic) and its public key beside it (``.pub``)."""
    key = Ed25519PrivateKey.generate()
    keyfile.write_private_key(path, key)
    return key


def write_public_key(public_key: Ed25519PublicKey, path: Path) -> None:
    """Write a public key (PEM, 0644, atomic): what a verifier is given."""
    keyfile.write_public_key(
        path, public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The log's signing key, created on first use; refused when others may read it."""
    return keyfile.load_or_create(path, "ed25519")


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidCheckpoint(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    head: bytes
    frontier: tuple[bytes, ...]
    file: str
    offset: int
    ts: str
    key_id: str
    sig: bytes = b""

    def signed_fields(self) -> dict[str, Any]:
        return {
            "v": 1,
            "size": self.size,
            "root": self.root.hex(),
            "head": self.head.hex(),
            "frontier": [n.hex() for n in self.frontier],
            "file": self.file,
            "offset": self.offset,
            "ts": self.ts,
            "key_id": self.key_id,
        }

    def message(self) -> bytes:
        return SIGNING_CONTEXT + orjson.dumps(self.signed_fields(), option=orjson.OPT_SORT_KEYS)

    def to_line(self) -> bytes:
        doc = self.signed_fields()
        doc["sig"] = base64.b64encode(self.sig).decode()
        return b"v1 " + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"


def sign(cp: Checkpoint, key: Ed25519PrivateKey) -> Checkpoint:
    unsigned = Checkpoint(**{**cp.__dict__, "sig": b"", "key_id": key_id(key.public_key())})
    return Checkpoint(**{**unsigned.__dict__, "sig": key.sign(unsigned.message())})


def parse_checkpoint(line: bytes) -> Checkpoint:
    """Parse one checkpoint line (signature not checked)."""
    if not line.startswith(b"v1 ") or not line.endswith(b"\n"):
        raise InvalidCheckpoint("not a complete version-1 checkpoint line")
    try:
        doc = orjson.loads(line[3:])
        cp = Checkpoint(
            size=int(doc["size"]),
            root=bytes.fromhex(doc["root"]),
            head=bytes.fromhex(doc["head"]),
            frontier=tuple(bytes.fromhex(n) for n in doc["frontier"]),
            file=str(doc["file"]),
            offset=int(doc["offset"]),
            ts=str(doc["ts"]),
            key_id=str(doc["key_id"]),
            sig=base64.b64decode(doc["sig"], validate=True),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidCheckpoint(f"malformed checkpoint: {exc}") from exc
    if doc.get("v") != 1 or cp.size < 0 or cp.offset < 0:
        raise InvalidCheckpoint("malformed checkpoint fields")
    return cp


def verify_signature(cp: Checkpoint, public_key: Ed25519PublicKey) -> None:
    """Raise InvalidCheckpoint unless ``cp`` is signed by ``public_key``."""
    if not hmac.compare_digest(cp.key_id, key_id(public_key)):
        raise InvalidCheckpoint("checkpoint is signed by a different key")
    try:
        public_key.verify(cp.sig, cp.message())
    except InvalidSignature as exc:
        raise InvalidCheckpoint("invalid signature") from exc
