"""Read-only questions about issued grants, for the dashboard and admin tools.

Readers ask here instead of opening the store's files: the layout (``grants/``,
``revoked.json``) belongs to :class:`~.issuer.Issuer`. Answers come from the grants' clear
headers, so no key is needed, and they are for display only: whether a grant may be *used*
is decided by the issuer and the node agent, which authenticate it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CredentialError
from .revocation import RevocationList
from .store import GRANTS_DIR, REVOCATIONS_FILE, GrantStore


@dataclass(frozen=True)
class LiveGrant:
    """An issued grant that has not expired and is not revoked."""

    serial: str
    user: str
    fileset: str
    mode: str
    mount_path: str
    expires: float


def live_grants(state_dir: Path, *, now: float | None = None) -> list[LiveGrant]:
    """Every live grant in ``state_dir`` (the issuer's state), sorted by user then expiry.

    Fails closed for display: an unreadable revocation list shows no grant as live; an
    unreadable grant file is left out. A missing directory has no grants.
    """
    state_dir = Path(state_dir)
    grants = state_dir / GRANTS_DIR
    if not grants.is_dir():
        return []
    try:
        revoked = {r.serial for r in RevocationList(state_dir / REVOCATIONS_FILE).all()}
    except CredentialError:
        return []
    now = time.time() if now is None else now
    out = [
        LiveGrant(serial, header["user"], header["fileset"], header["mode"], header["mount_path"],
                  float(header["expires"]))
        for serial, header in GrantStore(grants).headers()
        if header is not None and header["expires"] >= now and serial not in revoked
    ]
    return sorted(out, key=lambda g: (g.user, g.expires, g.serial))


def live_grants_by_user(state_dir: Path, *, now: float | None = None) -> dict[str, list[LiveGrant]]:
    """:func:`live_grants` grouped by hub user."""
    out: dict[str, list[LiveGrant]] = {}
    for grant in live_grants(state_dir, now=now):
        out.setdefault(grant.user, []).append(grant)
    return out


__all__ = ["LiveGrant", "live_grants", "live_grants_by_user"]
