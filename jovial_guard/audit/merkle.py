"""RFC 6962 Merkle tree hashing, computed incrementally.

Checkpoints sign the root of a Merkle tree over every log entry so far (RFC 6962 §2.1:
leaf hash ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left || right)``). The
writer and the verifier both hold a :class:`CompactRange` — the roots of the perfect
subtrees that cover the leaves seen so far — so adding a leaf costs one hash on average and
the root of any prefix is available without keeping the whole tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = _sha256(b"").digest()


class CompactRange:
    """The frontier of a left-filled Merkle tree: enough to extend it and take its root.

    ``nodes[i]`` is the root of a perfect subtree; sizes are the set bits of ``size`` from
    the highest down, so the frontier of 13 leaves holds subtrees of 8, 4 and 1 leaves.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.nodes = list(nodes)
        if len(self.nodes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} needs {bin(size).count('1')} nodes")

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (already ``leaf_hash``-ed)."""
        nodes = self.nodes
        size = self.size
        node = leaf
        # Merge with the existing subtree of each size the carry passes through.
        while size & 1:
            node = _sha256(NODE_PREFIX + nodes.pop() + node).digest()
            size >>= 1
        nodes.append(node)
        self.size += 1

    def append_subtree(self, node: bytes, height: int) -> None:
        """Add the root of a perfect subtree of ``2**height`` leaves (``height`` 0: one leaf).

        The range must end on a multiple of that subtree's width, as it does when a verifier
        adds the aligned subtrees a worker computed for a run of leaves.
        """
        if self.size & ((1 << height) - 1):
            raise ValueError(f"a subtree of {1 << height} leaves cannot follow {self.size} leaves")
        nodes = self.nodes
        size = self.size >> height
        while size & 1:
            node = _sha256(NODE_PREFIX + nodes.pop() + node).digest()
            size >>= 1
        nodes.append(node)
        self.size += 1 << height

    def root(self) -> bytes:
        """RFC 6962 Merkle Tree Hash of all leaves so far."""
        if not self.nodes:
            return EMPTY_ROOT
        node = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            node = _sha256(NODE_PREFIX + left + node).digest()
        return node

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.nodes)


def perfect_root(leaves: list[bytes]) -> bytes:
    """Root of a perfect tree: ``len(leaves)`` must be a power of two."""
    level = leaves
    while len(level) > 1:
        level = [_sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def merkle_root(leaves: list[bytes]) -> bytes:
    """Reference implementation straight from RFC 6962 §2.1 (used by tests)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))
