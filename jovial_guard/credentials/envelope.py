"""Grants at rest: envelope encryption with a fresh data key per grant.

Binary format, version byte first (``ENVELOPE_VERSION``)::

    0x01 | u16 len(header) | header | u16 len(wrapped_dek) | wrapped_dek | nonce(12) | AES-256-GCM(secret)

``header`` is the canonical JSON of the grant's public fields plus the KEK id
(:class:`~.grant.GrantHeader`). It travels in clear (so grants can be listed without any
key) but is the AES-GCM associated data together with the version byte: changing the user,
uid/gid, fileset, mode, expiry, serial or key id in it makes the envelope fail to open.
The DEK is wrapped with the serial as KMS context, so a wrapped DEK cannot be moved to
another envelope either. Every failure to open is :class:`InvalidGrant`, nothing more.

:func:`seal` draws the DEK and nonce and calls :func:`seal_with`, which is deterministic
given them (test vectors).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from collections.abc import Callable
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CredentialError, InvalidGrant, KeyringError
from .grant import Grant, GrantHeader, canonical_json
from .keyring import KeyProvider

ENVELOPE_VERSION = b"\x01"
DEK_BYTES = 32
NONCE_BYTES = 12
_MAX_HEADER = 4096


def dek_context(serial: str) -> bytes:
    return b"jovial-guard/dek/v1\x00" + serial.encode()


def seal(grant: Grant, *, keyring: KeyProvider, randbytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """Encrypt ``grant`` under a fresh DEK wrapped by the keyring's active key."""
    return seal_with(grant, keyring=keyring, dek=randbytes(DEK_BYTES), nonce=randbytes(NONCE_BYTES))


def seal_with(grant: Grant, *, keyring: KeyProvider, dek: bytes, nonce: bytes) -> bytes:
    if len(dek) != DEK_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("dek must be 32 bytes and nonce 12 bytes")
    key_id, wrapped = keyring.wrap(dek, context=dek_context(grant.serial))
    header = canonical_json(grant.header(key_id=key_id))
    aad = ENVELOPE_VERSION + header
    ciphertext = AESGCM(dek).encrypt(nonce, grant.secret, aad)
    return b"".join(
        (
            ENVELOPE_VERSION,
            struct.pack(">H", len(header)),
            header,
            struct.pack(">H", len(wrapped)),
            wrapped,
            nonce,
            ciphertext,
        )
    )


def _split(blob: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(header, wrapped, nonce, ciphertext) or InvalidGrant."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < 1 + 2 or blob[:1] != ENVELOPE_VERSION:
        raise InvalidGrant()
    try:
        (hlen,) = struct.unpack_from(">H", blob, 1)
        if hlen > _MAX_HEADER:
            raise InvalidGrant()
        header = bytes(blob[3 : 3 + hlen])
        (wlen,) = struct.unpack_from(">H", blob, 3 + hlen)
        start = 5 + hlen
        wrapped = bytes(blob[start : start + wlen])
        nonce = bytes(blob[start + wlen : start + wlen + NONCE_BYTES])
        ciphertext = bytes(blob[start + wlen + NONCE_BYTES :])
    except struct.error:
        raise InvalidGrant() from None
    if len(header) != hlen or len(wrapped) != wlen or len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
        raise InvalidGrant()
    return header, wrapped, nonce, ciphertext


def read_header(blob: bytes) -> GrantHeader:
    """The clear header, NOT authenticated: for listing only, never for a decision."""
    header, _, _, _ = _split(blob)
    try:
        doc: Any = json.loads(header)
    except ValueError:
        raise InvalidGrant() from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise InvalidGrant()
    return cast(GrantHeader, doc)


def open_envelope(blob: bytes, *, keyring: KeyProvider) -> Grant:
    """Authenticate and decrypt; any failure (including an unknown key id) is InvalidGrant."""
    header_bytes, wrapped, nonce, ciphertext = _split(blob)
    try:
        doc = json.loads(header_bytes)
        if not isinstance(doc, dict) or doc.get("v") != 1 or canonical_json(doc) != header_bytes:
            raise InvalidGrant()
        dek = keyring.unwrap(doc["key_id"], wrapped, context=dek_context(doc["serial"]))
        secret = AESGCM(dek).decrypt(nonce, ciphertext, ENVELOPE_VERSION + header_bytes)
        return Grant.from_header(doc, secret=secret)
    except (InvalidTag, KeyringError, ValueError, KeyError, TypeError, CredentialError):
        raise InvalidGrant() from None


def key_id_of(blob: bytes) -> str:
    """Which KEK an envelope is wrapped under (unauthenticated; for rewrap planning)."""
    return str(read_header(blob)["key_id"])


def to_token(blob: bytes) -> str:
    """Text form for the CLI and APIs: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def from_token(token: str) -> bytes:
    try:
        text = token.strip()
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, AttributeError):
        raise InvalidGrant() from None
