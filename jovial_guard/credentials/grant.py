"""The grant: who may reach which fileset, how, until when. Wire formats live here only.

A :class:`Grant` is the plaintext credential. It never touches disk in clear: at rest it is
an envelope (:mod:`.envelope`), in transit to a node agent it is sealed to the agent's
public key (:mod:`.delivery`). Validation happens once, in :meth:`Grant.__post_init__`, so
every grant that exists in memory is well formed: names are safe path components, the
fileset cannot climb out of the storage root, uid/gid are never root.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from .errors import GrantRequestInvalid

#: Version of the grant's field set; first field of every serialized form.
GRANT_VERSION = 1
Mode = Literal["ro", "rw"]
MODES: tuple[str, ...] = ("ro", "rw")
SECRET_BYTES = 32

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SERIAL = re.compile(r"^[0-9a-f]{32}$")
_MOUNT_PATH = re.compile(r"^(/[a-z0-9][a-z0-9._-]{0,63}){2,}$")
_MAX_ID = 2**31 - 1


class GrantHeader(TypedDict):
    """The authenticated-but-public fields of an envelope (the AAD)."""

    v: int
    user: str
    uid: int
    gid: int
    fileset: str
    mode: str
    mount_path: str
    nodemap: str
    issued: int
    expires: int
    serial: str
    key_id: str


def is_safe_name(value: object) -> bool:
    """Same rule as ``safe_name`` in policies/storage/storage.rego."""
    return isinstance(value, str) and bool(_NAME.match(value)) and ".." not in value


def is_safe_fileset(value: object) -> bool:
    return isinstance(value, str) and all(is_safe_name(p) for p in value.split("/"))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise GrantRequestInvalid(message)


@dataclass(frozen=True)
class Grant:
    """One storage credential. ``secret`` is the per-grant key material (SSK key data on Lustre)."""

    user: str
    uid: int
    gid: int
    fileset: str
    mode: Mode
    mount_path: str
    nodemap: str
    issued: int
    expires: int
    serial: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check(
            is_safe_name(self.user),
            f"user {self.user!r}: expected a lower-case name like 'alice' ([a-z0-9._-], max 64)",
        )
        for name in ("uid", "gid"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID,
                f"{name} {value!r}: expected an integer 1..{_MAX_ID} (never root)",
            )
        _check(
            is_safe_fileset(self.fileset),
            f"fileset {self.fileset!r}: expected a relative path like 'home/alice' without '..'",
        )
        _check(self.mode in MODES, f"mode {self.mode!r}: expected 'ro' or 'rw'")
        _check(
            isinstance(self.mount_path, str)
            and bool(_MOUNT_PATH.match(self.mount_path))
            and ".." not in self.mount_path,
            f"mount_path {self.mount_path!r}: expected an absolute path of at least two parts like '/lustre/home'",
        )
        _check(is_safe_name(self.nodemap), f"nodemap {self.nodemap!r}: expected a name like 'jg-alice'")
        for name in ("issued", "expires"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{name} {value!r}: expected seconds since the epoch",
            )
        _check(self.expires > self.issued, f"expires {self.expires} must be after issued {self.issued}")
        _check(
            isinstance(self.serial, str) and bool(_SERIAL.match(self.serial)),
            f"serial {self.serial!r}: expected 32 lower-case hex digits",
        )
        _check(
            isinstance(self.secret, bytes) and len(self.secret) == SECRET_BYTES,
            f"secret: expected {SECRET_BYTES} bytes",
        )

    @property
    def mount_parent(self) -> str:
        """The container directory the user's staging volume is mounted on (``/lustre``)."""
        return self.mount_path.rsplit("/", 1)[0]

    @property
    def mount_leaf(self) -> str:
        """The sub-directory of the staging volume the fileset appears in (``home``)."""
        return self.mount_path.rsplit("/", 1)[1]

    def header(self, *, key_id: str) -> GrantHeader:
        return {
            "v": GRANT_VERSION,
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "fileset": self.fileset,
            "mode": self.mode,
            "mount_path": self.mount_path,
            "nodemap": self.nodemap,
            "issued": self.issued,
            "expires": self.expires,
            "serial": self.serial,
            "key_id": key_id,
        }

    def public_json(self) -> dict[str, Any]:
        """Every field except the secret: safe to print and log."""
        doc: dict[str, Any] = dict(self.header(key_id=""))
        doc.pop("key_id")
        return doc

    def to_json_bytes(self) -> bytes:
        """Canonical plaintext (version first, secret included): only ever sealed, never stored."""
        return canonical_json({**self.public_json(), "secret": base64.b64encode(self.secret).decode()})

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Grant:
        """Parse :meth:`to_json_bytes` output; raises ValueError/GrantRequestInvalid on anything odd."""
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != GRANT_VERSION:
            raise GrantRequestInvalid("grant: unknown version")
        secret = base64.b64decode(doc["secret"], validate=True)
        return cls.from_header(doc, secret=secret)

    @classmethod
    def from_header(cls, doc: dict[str, Any], *, secret: bytes) -> Grant:
        return cls(
            user=doc["user"],
            uid=doc["uid"],
            gid=doc["gid"],
            fileset=doc["fileset"],
            mode=doc["mode"],
            mount_path=doc["mount_path"],
            nodemap=doc["nodemap"],
            issued=doc["issued"],
            expires=doc["expires"],
            serial=doc["serial"],
            secret=secret,
        )


def canonical_json(doc: Any) -> bytes:
    """The one JSON encoding used for authenticated data: sorted keys, no spaces, ASCII."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
