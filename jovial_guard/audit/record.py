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

import binascii
import hashlib
import re
from dataclasses import dataclass

from ..errors import MalformedInput
from .merkle import leaf_hash

VERSION = b"v1"
CHAIN_PREFIX = b"\x02"
GENESIS = bytes(32)
#: Offsets inside a line: "v1 " + 64 hex + " " then the entry.
_HASH_START = 3
_HASH_END = 67
_ENTRY_START = 68
_sha256 = hashlib.sha256
_LINE_START = VERSION + b" "
_match_line = re.compile(re.escape(_LINE_START) + rb"([0-9a-f]{64}) ([0-9]+) ").match
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_unhex = binascii.unhexlify


class RecordFormatError(MalformedInput, ValueError):
    """A line that is not a well-formed version-1 record."""


@dataclass(frozen=True)
class ParsedRecord:
    seq: int
    chain: bytes
    leaf: bytes
    body: bytes


#: The record's Merkle leaf: RFC 6962's leaf hash of its body.
leaf_of = leaf_hash


def build_line(seq: int, body: bytes, prev_chain: bytes, leaf: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """Return ``(line, leaf, chain)`` for a record. ``body`` must be one-line JSON.

    ``leaf`` may be given when it was computed earlier (it must be ``leaf_of(body)``).
    """
    if b"\n" in body:
        raise RecordFormatError("record body must not contain a newline")
    if leaf is None:
        leaf = leaf_hash(body)
    chain = expected_chain(prev_chain, seq, leaf)
    return b"%s %s %d %s\n" % (VERSION, chain.hex().encode(), seq, body), leaf, chain


def split_line(line: bytes) -> tuple[int, bytes, bytes]:
    """``(seq, stored chain hash, body)`` of one line given without its newline.

    Raises RecordFormatError naming what is wrong. The verifier calls this for every record,
    so it is one regular-expression match and does no hashing (see :func:`leaf_of` and
    :func:`expected_chain`).
    """
    match = _match_line(line)
    if match is None:
        raise RecordFormatError(_what_is_wrong(line))
    return int(match[2]), _unhex(match[1]), line[match.end():]


def _what_is_wrong(line: bytes) -> str:
    if line[:_HASH_START] != _LINE_START or line[_HASH_END:_ENTRY_START] != b" ":
        return "not a version-1 line"
    if _HEX64.fullmatch(line[_HASH_START:_HASH_END]) is None:
        return "chain hash is not hex"
    return "bad sequence number"


def parse_line(line: bytes) -> ParsedRecord:
    """Split a complete line (with its newline) and hash it; does not check the chain."""
    if len(line) < _ENTRY_START + 3 or not line.endswith(b"\n"):
        raise RecordFormatError("truncated record")
    seq, chain, body = split_line(line[:-1])
    return ParsedRecord(seq=seq, chain=chain, leaf=leaf_of(body), body=body)


def expected_chain(prev_chain: bytes, seq: int, leaf: bytes) -> bytes:
    """The chain hash record ``seq`` must carry after ``prev_chain``."""
    return _sha256(CHAIN_PREFIX + prev_chain + seq.to_bytes(8, "big") + leaf).digest()
