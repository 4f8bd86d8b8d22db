"""Credential errors, each named for what failed.

Cryptographic failures (a flipped bit, a wrong key, a forged or truncated token) are all
:class:`InvalidGrant` with no further detail: telling an attacker *which* check failed is an
oracle. Once a grant has been authenticated, the reasons it may still be refused (expired,
revoked, presented for another user or fileset) are not secrets and get their own clear
exceptions, so the hub and the admins can say what happened.
"""

from __future__ import annotations

from ..errors import Denied, JovialGuardError, MalformedInput, Misconfigured, Unavailable
from ..keyfile import KeyFilePermissions


class CredentialError(JovialGuardError):
    """Base class for every credentials error (each also derives from one kind in ``errors``)."""


class InvalidGrant(CredentialError, Denied):
    """The token or sealed grant failed authentication or decoding. Deliberately vague."""

    def __init__(self) -> None:
        super().__init__("invalid grant")


class GrantRefused(CredentialError, Denied):
    """An authentic grant that must not be used; ``serial`` names it for the logs."""

    def __init__(self, message: str, *, serial: str) -> None:
        self.serial = serial
        super().__init__(message)


class GrantExpired(GrantRefused):
    """The grant's ``expires`` is in the past."""


class GrantRevoked(GrantRefused):
    """The grant's serial is on the revocation list."""

    def __init__(self, message: str, *, serial: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message, serial=serial)


class GrantWrongUser(GrantRefused):
    """An authentic grant presented for a user it was not issued to (replay)."""


class GrantWrongFileset(GrantRefused):
    """An authentic grant presented for a fileset it does not cover (replay)."""


class GrantRequestInvalid(CredentialError, MalformedInput, ValueError):
    """A caller asked for a grant with a bad argument; the message names it and what is accepted."""


class KeyringError(CredentialError, Misconfigured):
    """The key-encryption keys cannot be loaded or used (missing file, bad format, unknown id).

    A key file others could read is :class:`~jovial_guard.keyfile.KeyFilePermissions`
    (re-exported here), the same refusal every key file gets.
    """


class MountError(CredentialError, Unavailable):
    """The node agent could not perform or remove a mount."""


class StoragePolicyError(CredentialError, Unavailable):
    """OPA gave no usable storage grant for the workload (no grant, or a malformed one)."""


__all__ = [
    "CredentialError",
    "InvalidGrant",
    "GrantRefused",
    "GrantExpired",
    "GrantRevoked",
    "GrantWrongUser",
    "GrantWrongFileset",
    "GrantRequestInvalid",
    "KeyringError",
    "KeyFilePermissions",
    "MountError",
    "StoragePolicyError",
]
