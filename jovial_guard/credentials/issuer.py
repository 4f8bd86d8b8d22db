"""The issuer: issue, verify, renew, revoke and rewrap grants.

Clock and randomness are injected: :meth:`Issuer.issue` reads the clock and calls
:meth:`Issuer.issue_at`, which draws the serial and secret from ``randbytes`` (tests and
vectors pass their own). Verification raises; it never returns a boolean to ignore:

* :class:`InvalidGrant` - the token failed authentication (no detail: no oracle);
* :class:`GrantWrongUser` / :class:`GrantWrongFileset` - an authentic grant replayed
  for another user or fileset;
* :class:`GrantRevoked`, :class:`GrantExpired`.

``revoke(user=..., serial=..., reason=...)`` is the call the audit responder, the hub's
stop hook and admins use; listeners (the node agent) are told at once so mounts go away
without waiting for the next sweep.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..atomic import ensure_private_dir
from .delivery import load_or_create_signing_key, seal_for_agent
from .envelope import from_token, key_id_of, open_envelope, seal, to_token
from .errors import (
    CredentialError,
    GrantExpired,
    GrantRequestInvalid,
    GrantRevoked,
    GrantWrongFileset,
    GrantWrongUser,
    InvalidGrant,
)
from .grant import SECRET_BYTES, Grant, GrantHeader, Mode
from .keyring import KeyProvider, LocalFileKeyring
from .revocation import Revocation, RevocationList
from .store import GRANTS_DIR, REVOCATIONS_FILE, GrantStore

log = logging.getLogger(__name__)

#: A working day.
DEFAULT_LIFETIME = 8 * 3600


class RevocationListener(Protocol):
    def __call__(self, revoked: list[Revocation]) -> None: ...


@dataclass(frozen=True)
class Issued:
    """A new grant: the plaintext (for sealing to an agent, keep in memory only) and its token."""

    grant: Grant
    token: str


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    already_current: int
    failed: tuple[str, ...]
    key_id: str


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Issuer:
    def __init__(
        self,
        *,
        keyring: KeyProvider,
        store: GrantStore,
        revocations: RevocationList,
        signer: Ed25519PrivateKey,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Callable[[], float] = time.time,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if lifetime <= 0:
            raise GrantRequestInvalid(
                f"lifetime {lifetime!r}: expected a positive number of seconds (default {DEFAULT_LIFETIME})"
            )
        self.keyring = keyring
        self.store = store
        self.revocations = revocations
        self.signer = signer
        self.lifetime = lifetime
        self.clock = clock
        self.randbytes = randbytes
        self.listeners: list[RevocationListener] = []

    @classmethod
    def from_directory(
        cls,
        state_dir: Path,
        *,
        keyring_path: Path | None = None,
        keyring: KeyProvider | None = None,
        lifetime: int = DEFAULT_LIFETIME,
        create: bool = False,
    ) -> Issuer:
        """The standard layout: ``state_dir/{grants/, revoked.json}``, keys under ``keys/``.

        The key directory defaults to ``state_dir/../keys`` so a scan of the state directory
        finds no key material. ``create`` makes a first keyring if none exists.
        """
        state_dir = ensure_private_dir(Path(state_dir))
        key_dir = ensure_private_dir(Path(keyring_path).parent if keyring_path else state_dir.parent / "keys")
        keyring_path = Path(keyring_path) if keyring_path else key_dir / "kek.json"
        if keyring is None:
            if create and not keyring_path.exists():
                keyring = LocalFileKeyring.create(keyring_path)
            else:
                keyring = LocalFileKeyring(keyring_path)
        signer = load_or_create_signing_key(key_dir / "issuer-signing.key")
        return cls(
            keyring=keyring,
            store=GrantStore(state_dir / GRANTS_DIR),
            revocations=RevocationList(state_dir / REVOCATIONS_FILE),
            signer=signer,
            lifetime=lifetime,
        )

    # -- issuing ------------------------------------------------------------------------
    def issue(
        self,
        *,
        user: str,
        uid: int,
        gid: int,
        fileset: str,
        mode: Mode,
        mount_path: str,
        nodemap: str | None = None,
        lifetime: int | None = None,
    ) -> Issued:
        return self.issue_at(
            int(self.clock()),
            user=user,
            uid=uid,
            gid=gid,
            fileset=fileset,
            mode=mode,
            mount_path=mount_path,
            nodemap=nodemap,
            lifetime=lifetime,
        )

    def issue_at(
        self,
        now: int,
        *,
        user: str,
        uid: int,
        gid: int,
        fileset: str,
        mode: Mode,
        mount_path: str,
        nodemap: str | None = None,
        lifetime: int | None = None,
    ) -> Issued:
        life = self.lifetime if lifetime is None else lifetime
        if not isinstance(life, int) or life <= 0:
            raise GrantRequestInvalid(f"lifetime {life!r}: expected a positive number of seconds")
        grant = Grant(
            user=user,
            uid=uid,
            gid=gid,
            fileset=fileset,
            mode=mode,
            mount_path=mount_path,
            nodemap=nodemap or f"jg-{user}"[:64],
            issued=now,
            expires=now + life,
            serial=self.randbytes(16).hex(),
            secret=self.randbytes(SECRET_BYTES),
        )
        blob = seal(grant, keyring=self.keyring, randbytes=self.randbytes)
        self.store.put(grant.serial, blob)
        log.info("issued storage grant %s for %s: %s %s until %d", grant.serial, user, fileset, mode, grant.expires)
        return Issued(grant=grant, token=to_token(blob))

    def renew(self, serial: str, *, lifetime: int | None = None) -> Issued:
        """Extend a live grant (same serial, same secret, new expiry): used while the server runs."""
        now = int(self.clock())
        grant = self.check(self.load(serial), now=now)
        life = self.lifetime if lifetime is None else lifetime
        renewed = Grant(**{**grant.__dict__, "expires": max(grant.expires, now + life)})
        blob = seal(renewed, keyring=self.keyring, randbytes=self.randbytes)
        self.store.put(serial, blob)
        return Issued(grant=renewed, token=to_token(blob))

    def seal_for(self, grant: Grant, *, agent_key: X25519PublicKey, agent_id: str) -> bytes:
        """The grant sealed to one node agent (HPKE + issuer signature)."""
        return seal_for_agent(grant, signer=self.signer, agent_key=agent_key, agent_id=agent_id)

    # -- verifying ----------------------------------------------------------------------
    def verify(self, token: str | bytes, *, user: str, fileset: str | None = None) -> Grant:
        return self.verify_at(token, now=int(self.clock()), user=user, fileset=fileset)

    def verify_at(self, token: str | bytes, *, now: int, user: str, fileset: str | None = None) -> Grant:
        """Authenticate, then check who it is for, revocation and expiry. Raises on any failure."""
        blob = from_token(token) if isinstance(token, str) else token
        grant = open_envelope(blob, keyring=self.keyring)
        if not _eq(grant.user, user):
            raise GrantWrongUser(
                f"grant {grant.serial} was issued to {grant.user!r}, not {user!r}", serial=grant.serial
            )
        if fileset is not None and not _eq(grant.fileset, fileset):
            raise GrantWrongFileset(
                f"grant {grant.serial} covers fileset {grant.fileset!r}, not {fileset!r}", serial=grant.serial
            )
        return self.check(grant, now=now)

    def check(self, grant: Grant, *, now: int) -> Grant:
        """Revocation and expiry of an already authenticated grant."""
        revoked = self.revocations.get(grant.serial)
        if revoked is not None:
            raise GrantRevoked(
                f"grant {grant.serial} for {grant.user} was revoked at {revoked.at}: {revoked.reason}",
                serial=grant.serial,
                reason=revoked.reason,
            )
        if now >= grant.expires:
            raise GrantExpired(
                f"grant {grant.serial} for {grant.user} expired at {grant.expires} (now {now})", serial=grant.serial
            )
        return grant

    def load(self, serial: str) -> Grant:
        """The stored grant (authenticated). InvalidGrant if the file was tampered with."""
        return open_envelope(self.store.get(serial), keyring=self.keyring)

    # -- revoking -------------------------------------------------------------------------
    def revoke(self, *, user: str | None = None, serial: str | None = None, reason: str) -> list[str]:
        """Revoke one grant (``serial``) or every grant of ``user``; returns the serials revoked.

        Persisted (atomically, fsync'd) before it returns, then every listener (node agents)
        is told so mounts are removed now. By user, the user's entries in the per-user index
        are read, not the whole store, and dropped once the revocation is on disk. Revoking
        an unknown serial records it anyway (fail closed: a grant issued elsewhere with that
        serial is refused too).
        """
        if (user is None) == (serial is None):
            raise GrantRequestInvalid("revoke: give exactly one of user= or serial=")
        if not reason or not isinstance(reason, str):
            raise GrantRequestInvalid("revoke: reason= must say why (it is logged and shown to the user)")
        now = int(self.clock())
        entries: list[Revocation] = []
        if serial is not None:
            self.store.path_for(serial)  # validates the serial's shape
            header = self.store.header(serial)
            entries.append(Revocation(serial, header["user"] if header is not None else "", reason, now))
        else:
            # The user's entries in the per-user index hold every stored grant of theirs
            # that can still be live (an expired one is refused everywhere anyway).
            for s in self.store.candidates(str(user)):
                header = self.store.header(s)
                if header is not None and header["user"] == user and self.revocations.get(s) is None:
                    entries.append(Revocation(s, str(user), reason, now))
        self.revocations.add(entries)
        for entry in entries:  # durable now: the entries are never needed again
            if entry.user:
                self.store.index.drop(entry.user, entry.serial)
        for entry in entries:
            log.warning("revoked storage grant %s (%s): %s", entry.serial, entry.user or "unknown user", reason)
        for listener in list(self.listeners):
            try:
                listener(entries)
            except Exception:
                log.exception("revocation listener failed; the next agent sweep removes the mount")
        return [e.serial for e in entries]

    # -- listing and key rotation ---------------------------------------------------------
    def list_grants(self) -> list[tuple[str, GrantHeader | None, Revocation | None]]:
        return [(s, h, self.revocations.get(s)) for s, h in self.store.headers()]

    def live_serials(self, *, user: str) -> list[str]:
        """The serials of ``user``'s grants that are neither revoked nor expired, sorted.

        Asked on every spawn ("one live grant per user"), so it reads only the user's entries
        in the store's per-user index (:mod:`.user_index`), not every grant ever issued. Each
        candidate is checked against its grant file and the revocation list, which decide;
        entries of revoked or expired grants are dropped on the way.
        """
        now = int(self.clock())
        live = []
        for serial in self.store.candidates(user):
            header = self.store.header(serial)
            if header is None:
                continue  # no grant (yet, or any more): not live; a rebuild clears old entries
            if header["user"] != user:
                self.store.index.add(header["user"], serial)  # filed under the wrong user: move it
                self.store.index.drop(user, serial)
            elif self.revocations.get(serial) is not None or header["expires"] <= now:
                self.store.index.drop(user, serial)  # final: a revoked or expired grant never comes back
            else:
                live.append(serial)
        return live

    def rewrap(self, *, durable: bool = True, workers: int = 8) -> RewrapReport:
        """Re-seal every grant not under the active key (fresh DEK), one atomic replace each.

        Grants stay readable throughout: until its file is replaced a grant is under its old
        key, which is still in the keyring. Each new file is fsync'd before its rename; the
        directory is fsync'd once at the end (a crash before that leaves some grants under
        the old key, still valid). ``workers`` threads overlap the fsyncs.
        ``durable=False`` skips the file fsyncs (the bench measures both).
        """
        active = self.keyring.active_key_id

        def one(serial: str) -> str:
            try:
                blob = self.store.get(serial)
                grant = open_envelope(blob, keyring=self.keyring)
            except (InvalidGrant, CredentialError):
                return "failed"
            if key_id_of(blob) == active:
                return "current"
            self.store.put(
                serial, seal(grant, keyring=self.keyring, randbytes=self.randbytes), durable=durable, sync_dir=False
            )
            return "done"

        serials = self.store.serials()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            outcomes = list(pool.map(one, serials))
        self.store.sync()
        failed = tuple(s for s, o in zip(serials, outcomes, strict=True) if o == "failed")
        return RewrapReport(
            rewrapped=outcomes.count("done"), already_current=outcomes.count("current"), failed=failed, key_id=active
        )

    def prune(self, *, retention: int = 7 * 86400) -> list[str]:
        """Delete grants that expired more than ``retention`` seconds ago, and their revocations.

        An expired grant is refused by its expiry alone, so forgetting it cannot re-enable it;
        the retention keeps recent history for ``creds list`` and investigations.
        """
        cutoff = int(self.clock()) - retention
        gone = {s for s, h in self.store.headers() if h is not None and h["expires"] < cutoff}
        for serial in sorted(gone):
            self.store.delete(serial)
        self.store.sync()
        self.revocations.discard(gone)
        return sorted(gone)

    def keys_in_use(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, header in self.store.headers():
            if header is not None:
                counts[header["key_id"]] = counts.get(header["key_id"], 0) + 1
        return counts

    def retire_key(self, key_id: str) -> None:
        """Drop an old KEK, refusing while any stored grant still needs it."""
        in_use = self.keys_in_use().get(key_id, 0)
        if in_use:
            raise CredentialError(f"key {key_id} still wraps {in_use} grant(s); run `jovial-guard creds rewrap` first")
        retire = getattr(self.keyring, "retire", None)
        if retire is None:
            raise CredentialError("this key provider does not retire keys here; retire it in the KMS")
        retire(key_id)
