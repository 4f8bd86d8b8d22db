"""The node agent: receives sealed grants, checks them, performs and removes mounts.

The agent holds an X25519 private key (grants are sealed to it) and the issuer's Ed25519
public key (grants must be signed by it). For every grant it receives it checks, in this
order, and raises on the first failure: authenticity (:class:`InvalidGrant`), that it is
for the user the mount is requested for, revocation, expiry. Only then does the backend
mount. :meth:`NodeAgent.sweep` re-checks every active mount (revocation list re-read,
clock) and removes the ones that are no longer valid, plus any mount under the staging
root the agent does not hold a grant for (fail closed).

In the embedded stack the agent lives in the hub process and the issuer calls
:meth:`NodeAgent.on_revoked` directly; on a cluster it is a per-node daemon that receives
the same sealed bytes over its socket.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..hardening.userns import IdMap
from .backends.bind import ActiveMount, BindBackend
from .delivery import open_delivery
from .errors import GrantExpired, GrantRefused, GrantRevoked, GrantWrongUser
from .grant import Grant
from .revocation import Revocation, RevocationList

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(
        self,
        *,
        agent_id: str,
        private_key: X25519PrivateKey,
        issuer_key: Ed25519PublicKey,
        revocations: RevocationList,
        backend: BindBackend,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_id = agent_id
        self._private_key = private_key
        self.issuer_key = issuer_key
        self.revocations = revocations
        self.backend = backend
        self.clock = clock
        self._lock = threading.RLock()
        self._grants: dict[str, Grant] = {}  # user -> grant currently mounted
        self._id_maps: dict[str, IdMap] = {}  # user -> their container's id mapping

    @property
    def public_key(self) -> X25519PublicKey:
        return self._private_key.public_key()

    def accept(self, sealed: bytes, *, user: str, id_map: IdMap | None = None) -> Grant:
        return self.accept_at(sealed, now=int(self.clock()), user=user, id_map=id_map)

    def accept_at(self, sealed: bytes, *, now: int, user: str, id_map: IdMap | None = None) -> Grant:
        """Verify a sealed grant and mount it for ``user``; a refused grant also loses its mount.

        ``id_map``: the user's container id mapping (the mount is idmapped through it). A
        renewal passes none and keeps the mapping the user's server was started with.
        """
        grant = open_delivery(sealed, agent_key=self._private_key, agent_id=self.agent_id, issuer_key=self.issuer_key)
        if not hmac.compare_digest(grant.user.encode(), user.encode()):
            raise GrantWrongUser(f"grant {grant.serial} is for {grant.user!r}, not {user!r}", serial=grant.serial)
        try:
            self._check(grant, now=now)
        except GrantRefused:
            self._remove_serial(grant.serial, why="refused")
            raise
        with self._lock:
            if id_map is not None:
                self._id_maps[grant.user] = id_map
            self.backend.mount(grant, id_map=self._id_maps.get(grant.user))
            self._grants[grant.user] = grant
        log.info(
            "agent %s mounted %s (%s) for %s at %s",
            self.agent_id,
            grant.fileset,
            grant.mode,
            grant.user,
            grant.mount_path,
        )
        return grant

    def _check(self, grant: Grant, *, now: int) -> None:
        revoked = self.revocations.get(grant.serial)
        if revoked is not None:
            raise GrantRevoked(
                f"grant {grant.serial} for {grant.user} was revoked: {revoked.reason}",
                serial=grant.serial,
                reason=revoked.reason,
            )
        if now >= grant.expires:
            raise GrantExpired(f"grant {grant.serial} for {grant.user} expired at {grant.expires}", serial=grant.serial)

    def holding(self, user: str) -> Grant | None:
        with self._lock:
            return self._grants.get(user)

    def withdraw(self, *, user: str, reason: str) -> bool:
        """Remove ``user``'s mount (server stopped, admin request)."""
        with self._lock:
            grant = self._grants.pop(user, None)
            self._id_maps.pop(user, None)
            leaves = {grant.mount_leaf} if grant else set()
            leaves |= {m.leaf for m in self.backend.active() if m.user == user}
            removed = False
            for leaf in leaves:
                removed |= self.backend.unmount(user=user, leaf=leaf)
        if removed:
            log.warning("agent %s removed %s's storage mount: %s", self.agent_id, user, reason)
        return removed

    def on_revoked(self, revoked: list[Revocation]) -> None:
        """Issuer listener: unmount revoked grants now (the sweep would, later)."""
        for entry in revoked:
            self._remove_serial(entry.serial, why=entry.reason)

    def _remove_serial(self, serial: str, *, why: str) -> None:
        with self._lock:
            for user, grant in list(self._grants.items()):
                if grant.serial == serial:
                    self.withdraw(user=user, reason=why)

    def sweep(self) -> list[str]:
        """Re-check every mount; remove expired, revoked and unaccounted ones. Returns users affected."""
        return self.sweep_at(now=int(self.clock()))

    def sweep_at(self, *, now: int) -> list[str]:
        affected: list[str] = []
        with self._lock:
            for user, grant in list(self._grants.items()):
                try:
                    self._check(grant, now=now)
                except GrantRefused as refusal:
                    self.withdraw(user=user, reason=str(refusal))
                    affected.append(user)
            for mount in self.backend.active():
                held = self._grants.get(mount.user)
                if held is None or held.mount_leaf != mount.leaf:
                    self.backend.unmount(user=mount.user, leaf=mount.leaf)
                    log.warning("agent %s removed unaccounted mount %s", self.agent_id, mount.path)
                    affected.append(mount.user)
        return sorted(set(affected))

    def active(self) -> list[ActiveMount]:
        return self.backend.active()
