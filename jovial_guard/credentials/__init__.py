"""Encrypted, expiring, revocable per-user storage credentials. See docs/credentials.md.

For the audit responder, the hub's stop hook and admin tooling, one call::

    from jovial_guard.credentials import revoke
    revoke(user="alice", reason="audit: crypto-miner detected")       # every grant of alice
    revoke(serial="1e93...e66", reason="admin request")               # one grant

It records the revocation (atomically, fsync'd) before returning. In the hub process the
node agent is told at once and unmounts; in another process (CLI, a separate responder)
the agent's next sweep (``c.StorageCredentials.sweep_interval``, 10 s) and every later use
see it. Returns the revoked serials. Raises GrantRequestInvalid for bad arguments.
"""

from __future__ import annotations

from pathlib import Path


def revoke(
    *,
    user: str | None = None,
    serial: str | None = None,
    reason: str,
    state_dir: Path | None = None,
    key_dir: Path | None = None,
) -> list[str]:
    """Revoke a user's grants or one grant by serial. See the module docstring."""
    from .hub import StorageCredentials
    from .issuer import Issuer

    if state_dir is None and StorageCredentials.initialized():
        return StorageCredentials.instance().issuer.revoke(user=user, serial=serial, reason=reason)
    creds = StorageCredentials.instance() if StorageCredentials.initialized() else StorageCredentials()
    state = Path(state_dir) if state_dir else Path(creds.state_dir)
    keys = Path(key_dir) if key_dir else Path(creds.key_dir)
    issuer = Issuer.from_directory(state, keyring_path=keys / "kek.json")
    return issuer.revoke(user=user, serial=serial, reason=reason)


__all__ = ["revoke"]
