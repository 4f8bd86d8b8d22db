"""Delivery without exposure: a grant sealed to one node agent's public key.

The issuer signs the grant's canonical plaintext with its Ed25519 key and seals
``signature || grant`` to the agent's X25519 key with HPKE (RFC 9180, base mode,
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) from ``cryptography``. HPKE gives
confidentiality to exactly one agent; the signature tells the agent the grant came from the
issuer (HPKE base mode alone would let anyone holding the agent's public key seal a grant).
The HPKE ``info`` names the protocol version and the agent id, so a grant sealed for
node A cannot be opened as a grant for node B even if both shared a key.

Format (version byte first)::

    sealed  = 0x01 | HPKE(enc || ciphertext)
    payload = 0x01 | ed25519_signature(64) | canonical grant JSON

The sealed bytes go straight from the hub process to the agent; they are never written into
the user's container, its environment or its volumes. Any failure to open is InvalidGrant.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .. import keyfile
from .errors import CredentialError, InvalidGrant, KeyringError
from .grant import Grant

DELIVERY_VERSION = b"\x01"
PAYLOAD_VERSION = b"\x01"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SIGNATURE_BYTES = 64


def _info(agent_id: str) -> bytes:
    return b"jovial-guard/grant-delivery/v1\x00" + agent_id.encode()


def _signed_message(grant_bytes: bytes) -> bytes:
    return b"jovial-guard/grant-signature/v1\x00" + grant_bytes


def seal_for_agent(grant: Grant, *, signer: Ed25519PrivateKey, agent_key: X25519PublicKey, agent_id: str) -> bytes:
    body = grant.to_json_bytes()
    payload = PAYLOAD_VERSION + signer.sign(_signed_message(body)) + body
    return DELIVERY_VERSION + SUITE.encrypt(payload, agent_key, info=_info(agent_id))


def open_delivery(sealed: bytes, *, agent_key: X25519PrivateKey, agent_id: str, issuer_key: Ed25519PublicKey) -> Grant:
    """Decrypt, check the issuer's signature, parse. Raises InvalidGrant and nothing else."""
    if not isinstance(sealed, (bytes, bytearray)) or sealed[:1] != DELIVERY_VERSION:
        raise InvalidGrant()
    try:
        payload = SUITE.decrypt(bytes(sealed[1:]), agent_key, info=_info(agent_id))
    except Exception:  # noqa: BLE001 - every HPKE failure is the same answer
        raise InvalidGrant() from None
    if payload[:1] != PAYLOAD_VERSION or len(payload) < 1 + SIGNATURE_BYTES + 2:
        raise InvalidGrant()
    signature, body = payload[1 : 1 + SIGNATURE_BYTES], payload[1 + SIGNATURE_BYTES :]
    try:
        issuer_key.verify(signature, _signed_message(body))
        return Grant.from_json_bytes(body)
    except (InvalidSignature, ValueError, KeyError, TypeError, CredentialError):
        raise InvalidGrant() from None


# -- key files -----------------------------------------------------------------------------
def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The issuer's Ed25519 key (PEM, mode 0600), created with its ``.pub`` beside it on first use."""
    return keyfile.load_or_create(path, "ed25519")


def load_or_create_agent_key(path: Path) -> X25519PrivateKey:
    """A node agent's X25519 key (PEM, mode 0600), created with its ``.pub`` on first use."""
    return keyfile.load_or_create(path, "x25519")


def load_public_key(path: Path) -> Ed25519PublicKey | X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{path}: cannot load public key ({exc})") from None
    if not isinstance(key, (Ed25519PublicKey, X25519PublicKey)):
        raise KeyringError(f"{path}: expected an Ed25519 or X25519 public key")
    return key


__all__ = [
    "seal_for_agent",
    "open_delivery",
    "load_or_create_signing_key",
    "load_or_create_agent_key",
    "load_public_key",
]
