"""Issued grants at rest: one envelope file per serial (``<serial>.grant``), never plaintext.

One file per grant keeps issuing O(1) and lets ``rewrap`` replace grants one at a time with
an atomic rename: a reader always finds either the old envelope (old key, still in the
keyring) or the new one, so rewrapping needs no downtime.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write, ensure_private_dir, sync_directory
from .envelope import read_header
from .errors import CredentialError, InvalidGrant
from .grant import GrantHeader
from .user_index import INDEX_DIR, UserIndex

#: The issuer's state directory layout: grant envelopes, and the revocation list beside them.
GRANTS_DIR = "grants"
REVOCATIONS_FILE = "revoked.json"

SUFFIX = ".grant"


class GrantStore:
    def __init__(self, directory: Path) -> None:
        self.directory = ensure_private_dir(Path(directory))
        self.index = UserIndex(self.directory / INDEX_DIR)

    def path_for(self, serial: str) -> Path:
        if len(serial) != 32 or not all(c in "0123456789abcdef" for c in serial):
            raise CredentialError(f"serial {serial!r}: expected 32 lower-case hex digits")
        return self.directory / f"{serial}{SUFFIX}"

    def put(self, serial: str, blob: bytes, *, durable: bool = True, sync_dir: bool = True) -> None:
        """Index entry first, then the grant file: the index never lacks a stored grant."""
        path = self.path_for(serial)
        try:
            self.index.add(str(read_header(blob).get("user")), serial)
        except InvalidGrant:
            pass  # no readable header: never live, nothing to index
        atomic_write(path, blob, mode=0o600, durable=durable, sync_dir=sync_dir)

    def get(self, serial: str) -> bytes:
        try:
            return self.path_for(serial).read_bytes()
        except FileNotFoundError:
            raise CredentialError(f"no grant with serial {serial} in {self.directory}") from None

    def delete(self, serial: str) -> None:
        """The grant file, then its index entry (an entry left by a crash names no grant)."""
        header = self.header(serial)
        try:
            os.unlink(self.path_for(serial))
        except FileNotFoundError:
            pass
        if header is not None:
            self.index.drop(str(header.get("user")), serial)

    def header(self, serial: str) -> GrantHeader | None:
        """The clear header of one grant; ``None`` if it is missing or unreadable."""
        try:
            return read_header(self.get(serial))
        except (InvalidGrant, CredentialError, OSError):
            return None

    def candidates(self, user: str) -> list[str]:
        """Serials that may hold a grant of ``user``: a superset of the live ones (check each)."""
        return self.index.candidates(user, self.headers)

    def serials(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def headers(self) -> Iterator[tuple[str, GrantHeader | None]]:
        """(serial, clear header) for every stored grant; ``None`` for an unreadable file."""
        for serial in self.serials():
            yield serial, self.header(serial)

    def sync(self) -> None:
        sync_directory(self.directory)
