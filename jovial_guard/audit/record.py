"""The on-disk audit record (version 1): one line, hash-chained, Merkle-leafed.

A line is::

    v1 <chain hash, 64 hex> <seq> <body JSON>\\n

The log entry is the body: its Merkle leaf is ``SHA-256(0x00 || body)`` (RFC 6962), and its
position in the tree is its sequence number. The chain hash is ``SHA-256(0x02 || previous
chain hash || seq as 8 bytes big-endian || leaf)``, so the chain covers the sequence
number and each record's bytes are hashed once. Because the leaf does not depend on the
sequence number, leaves can be computed before the writer assigns one (in parallel, by
intake workers). The first record chains from :data:`GENESIS`. The version comes first so
the format can change without ambiguity.

Pure functions only: building and checking lines does no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import MalformedInput
from .merkle import LEAF_PREFIX

VERSION = b"v1"
CHAIN_PREFIX = b"\x02"
GENESIS = bytes(32)
#: Offsets inside a line: "v1 " + 64 hex + " " then the entry.
_HASH_START = 3
_HASH_END = 67
_ENTRY_START = 68
_sha256 = hashlib.sha256


class RecordFormatError(MalformedInput, ValueError):
    """A line that is not a well-formed version-1 record."""


@dataclass(frozen=True)
class ParsedRecord:
    seq: int
    chain: bytes
    leaf: bytes
    body: bytes


def leaf_of(body: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + body).digest()


def build_line(seq: int, body: bytes, prev_chain: bytes, leaf: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """Return ``(line, leaf, chain)`` for a record. ``body`` must be one-line JSON.

    ``leaf`` may be given when it was computed earlier (it must be ``leaf_of(body)``).
    """
    if b"\n" in body:
        raise RecordFormatError("record body must not contain a newline")
    if leaf is None:
        leaf = _sha256(LEAF_PREFIX + body).digest()
    chain = _sha256(CHAIN_PREFIX + prev_chain + seq.to_bytes(8, "big") + leaf).digest()
    return b"v1 %s %d %s\n" % (chain.hex().encode(), seq, body), leaf, chain


def parse_line(line: bytes) -> ParsedRecord:
    """Split a complete line (with its newline) and hash it; does not check the chain."""
    if len(line) < _ENTRY_START + 3 or not line.endswith(b"\n"):
        raise RecordFormatError("truncated record")
    if line[:_HASH_START] != b"v1 " or line[_HASH_END:_ENTRY_START] != b" ":
        raise RecordFormatError("not a version-1 record")
    try:
        chain = bytes.fromhex(line[_HASH_START:_HASH_END].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordFormatError("chain hash is not hex") from exc
    entry = line[_ENTRY_START:-1]
    space = entry.find(b" ")
    if space <= 0 or not entry[:space].isdigit():
        raise RecordFormatError("sequence number missing")
    body = entry[space + 1:]
    return ParsedRecord(
        seq=int(entry[:space]),
        chain=chain,
        leaf=_sha256(LEAF_PREFIX + body).digest(),
        body=body,
    )


def expected_chain(prev_chain: bytes, seq: int, leaf: bytes) -> bytes:
    return _sha256(CHAIN_PREFIX + prev_chain + seq.to_bytes(8, "big") + leaf).digest()
