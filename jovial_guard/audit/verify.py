"""Verify an audit log against its signed checkpoints and name the first bad record.

What each kind of edit looks like to the verifier:
- a modified byte: that record's recomputed chain hash differs from the stored one;
- a deleted or reordered record: a sequence number out of place (chain breaks too);
- truncation: fewer records than a signed checkpoint covers;
- rewriting records *and* recomputing the chain: the chain is consistent again, but the
  Merkle root no longer matches the signed checkpoint; the signed frontier narrows the first
  bad record down to one perfect subtree after the last checkpoint that still matches;
- a forged, edited or foreign-key checkpoint: its Ed25519 signature does not verify.

Records after the newest checkpoint are covered by the chain only (reported as unsigned).
The record format and the hashing are :mod:`.record`'s and :mod:`.merkle`'s, the same
functions the writer uses; what is here is only the order of the checks and the parallel
split (the part that must verify 10^6 records in seconds).
"""

from __future__ import annotations

import hmac
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoint import (
    Checkpoint,
    InvalidCheckpoint,
    parse_checkpoint,
    verify_signature,
)
from .errors import LogVerificationFailed
from .log import CHECKPOINT_FILE, log_files
from .merkle import EMPTY_ROOT, CompactRange, perfect_root
from .record import GENESIS, RecordFormatError, expected_chain, leaf_of, split_line


@dataclass
class VerifyReport:
    records: int = 0
    files: int = 0
    checkpoints: int = 0
    signed_records: int = 0
    unsigned_tail: int = 0
    notes: list[str] = field(default_factory=list)


def load_checkpoints(directory: Path, public_key: Ed25519PublicKey) -> list[Checkpoint]:
    """All checkpoints, each signature verified; sizes must never go down."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        return []
    checkpoints: list[Checkpoint] = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                cp = parse_checkpoint(line)
                verify_signature(cp, public_key)
            except InvalidCheckpoint as exc:
                raise LogVerificationFailed(
                    f"checkpoint is not valid: {exc}", file=CHECKPOINT_FILE, line=number, checkpoint=number
                ) from exc
            if checkpoints and cp.size < checkpoints[-1].size:
                raise LogVerificationFailed(
                    f"checkpoint sizes go backwards ({checkpoints[-1].size} then {cp.size})",
                    file=CHECKPOINT_FILE, line=number, checkpoint=number,
                )
            checkpoints.append(cp)
    return checkpoints


def _frontier_sizes(size: int) -> list[int]:
    """Leaf counts of the perfect subtrees of a compact range, left to right."""
    return [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]


def _locate(cp: Checkpoint, nodes: list[bytes], good_size: int) -> int:
    """First record that can be bad, from the signed frontier vs the recomputed one."""
    start = 0
    for width, signed, ours in zip(_frontier_sizes(cp.size), cp.frontier, nodes, strict=False):
        if not hmac.compare_digest(signed, ours):
            return max(start, good_size) + 1
        start += width
    return good_size + 1


@dataclass
class _Chunk:
    """What one worker found in a byte range of one file (no cross-chunk knowledge)."""

    lines: int = 0
    first_seq: int = 0
    first_leaf: bytes = b""
    first_stored: bytes = b""
    last_stored: bytes = b""
    last_seq: int = 0
    leaves: bytes = b""
    error: tuple[int, int, str] | None = None  # (line in chunk, record, reason)
    tail: bytes = b""
    heads: dict[int, bytes] = field(default_factory=dict)  # stored chain at checkpoint sizes
    #: Without errors: the chunk's leaves as aligned perfect subtrees, split at checkpoint
    #: sizes: [(end_seq, [(height, node), ...]), ...]. With an error: ``leaves`` instead.
    pieces: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)


def _scan_chunk(path: str, start: int, end: int, cp_sizes: frozenset[int] = frozenset()) -> _Chunk:
    """Hash and check one range of complete lines using each line's stored predecessor.

    Checking ``chain[i] == H(0x02 || stored chain[i-1] || leaf[i])`` for every record is
    equivalent to recomputing the chain from genesis, and lets ranges be checked in parallel;
    the caller checks the joins between ranges.
    """
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    out = _Chunk()
    lines = data.split(b"\n")
    out.tail = lines.pop()
    out.lines = len(lines)
    leaves: list[bytes] = []
    add = leaves.append
    split, leaf_hash, chain_hash = split_line, leaf_of, expected_chain  # locals: the hot loop
    prev_stored = b""
    expected = 0
    for number, line in enumerate(lines, 1):
        try:
            seq, stored, body = split(line)
        except RecordFormatError as exc:
            out.error = (number, expected, f"malformed record ({exc})")
            break
        leaf = leaf_hash(body)
        if number == 1:
            out.first_seq, out.first_leaf, out.first_stored = seq, leaf, stored
        else:
            if seq != expected:
                out.error = (number, expected, _seq_reason(seq, expected))
                break
            if chain_hash(prev_stored, seq, leaf) != stored:
                out.error = (number, seq, _chain_reason(seq))
                break
        add(leaf)
        if seq in cp_sizes:
            out.heads[seq] = stored
        prev_stored = stored
        expected = seq + 1
        out.last_seq = seq
    out.last_stored = prev_stored
    if out.error is None and leaves:
        out.pieces = _pieces(leaves, out.first_seq - 1, cp_sizes)
    else:
        out.leaves = b"".join(leaves)
    return out


def _pieces(leaves: list[bytes], first: int, cp_sizes: frozenset[int]) -> list[tuple[int, list[tuple[int, bytes]]]]:
    """Cover leaves ``[first, first+len)`` by aligned perfect subtrees, cut at checkpoint sizes."""
    end = first + len(leaves)
    cuts = sorted(s for s in cp_sizes if first < s < end) + [end]
    out = []
    pos = first
    for cut in cuts:
        subtrees = []
        while pos < cut:
            height = 0
            while pos % (2 << height) == 0 and pos + (2 << height) <= cut:
                height += 1
            width = 1 << height
            subtrees.append((height, perfect_root(leaves[pos - first:pos - first + width])))
            pos += width
        out.append((cut, subtrees))
    return out


def _seq_reason(seq: int, expected: int) -> str:
    if seq > expected:
        return f"record {expected} is missing: found record {seq} in its place (deleted or reordered)"
    if seq > 0:
        return f"record {seq} appears again after record {expected - 1} (reordered or duplicated)"
    return "malformed sequence number"


def _chain_reason(seq: int) -> str:
    return (f"record {seq} does not match its chain hash (record {seq} modified, or record "
            f"{seq - 1} modified and its hash recomputed)")


def _chunks(files: list[Path], chunk_bytes: int) -> list[tuple[str, int, int, bool]]:
    """Split files into line-aligned byte ranges: (path, start, end, last range of the file)."""
    ranges = []
    for path in files:
        size = path.stat().st_size
        start = 0
        with open(path, "rb") as fh:
            while start < size:
                end = min(start + chunk_bytes, size)
                if end < size:
                    fh.seek(end)
                    rest = fh.read(1 << 16)
                    nl = rest.find(b"\n")
                    end = size if nl < 0 else end + nl + 1
                ranges.append((str(path), start, end, end >= size))
                start = end
        if size == 0:
            continue
    return ranges


def verify_log(directory: str | Path, public_key: Ed25519PublicKey, *, workers: int | None = None,
               chunk_bytes: int = 8 << 20) -> VerifyReport:
    """Verify every record and checkpoint; raise LogVerificationFailed at the first problem.

    Hashing runs in ``workers`` processes (default: one per CPU); if worker processes cannot
    run here, verification falls back to this process (same result, slower).
    """
    try:
        return _verify_log(directory, public_key, workers=workers, chunk_bytes=chunk_bytes)
    except BrokenProcessPool:
        return _verify_log(directory, public_key, workers=1, chunk_bytes=chunk_bytes)


def _verify_log(directory: str | Path, public_key: Ed25519PublicKey, *, workers: int | None,
                chunk_bytes: int) -> VerifyReport:
    """Workers hash line-aligned chunks; the Merkle frontier, the joins between chunks and
    the checkpoints are checked here."""
    directory = Path(directory)
    checkpoints = load_checkpoints(directory, public_key)
    report = VerifyReport(checkpoints=len(checkpoints))
    files = log_files(directory)
    report.files = len(files)
    cp_index = 0
    while cp_index < len(checkpoints) and checkpoints[cp_index].size == 0:
        cp = checkpoints[cp_index]
        if cp.root != EMPTY_ROOT or cp.head != GENESIS:
            raise LogVerificationFailed("empty-log checkpoint has a non-empty root", checkpoint=cp_index + 1)
        cp_index += 1
    next_cp = checkpoints[cp_index].size if cp_index < len(checkpoints) else -1
    good_size = 0

    ranges = _chunks(files, chunk_bytes)
    cp_sizes = frozenset(cp.size for cp in checkpoints)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    prev = GENESIS
    expected = 1
    frontier = CompactRange()
    line_base: dict[str, int] = {}

    pool = None
    if workers > 1 and len(ranges) > 1:
        # forkserver, not fork: callers (the service, tests) may have threads running.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["jovial_guard.audit.verify"])
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        results: Iterable[_Chunk] = pool.map(
            _scan_chunk, *zip(*[(p, s, e, cp_sizes) for p, s, e, _ in ranges], strict=True)
        )
    else:
        results = (_scan_chunk(p, s, e, cp_sizes) for p, s, e, _ in ranges)
    try:
        for (path_s, _start, _end, last_of_file), chunk in zip(ranges, results, strict=True):
            name = Path(path_s).name
            base = line_base.get(name, 0)
            line_base[name] = base + chunk.lines
            if chunk.lines:
                # The join with the previous chunk: first line's sequence and chain.
                if chunk.first_seq != expected:
                    if chunk.error is not None and chunk.error[0] == 1:
                        pass
                    else:
                        raise LogVerificationFailed(_seq_reason(chunk.first_seq, expected),
                                                    record=expected, file=name, line=base + 1)
                elif expected_chain(prev, expected, chunk.first_leaf) != chunk.first_stored:
                    raise LogVerificationFailed(_chain_reason(expected), record=expected,
                                                file=name, line=base + 1)
            # Each unit: (end seq, [(height, node)]) — a whole piece, or one leaf after an error.
            units: Iterable[tuple[int, list[tuple[int, bytes]]]]
            if chunk.pieces:
                units = chunk.pieces
            else:
                leaves = chunk.leaves
                units = [(expected + i // 32, [(0, leaves[i:i + 32])]) for i in range(0, len(leaves), 32)]
            for seq, subtrees in units:
                for height, subtree in subtrees:
                    frontier.append_subtree(subtree, height)
                if seq == next_cp:
                    head = chunk.heads.get(seq, b"")
                    while cp_index < len(checkpoints) and checkpoints[cp_index].size == seq:
                        cp = checkpoints[cp_index]
                        root = frontier.root()
                        if not (hmac.compare_digest(root, cp.root) and hmac.compare_digest(head, cp.head)):
                            raise LogVerificationFailed(
                                f"records {good_size + 1}..{seq} do not match signed checkpoint "
                                f"#{cp_index + 1} (size {seq}): rewritten after signing",
                                record=_locate(cp, frontier.nodes, good_size), checkpoint=cp_index + 1,
                            )
                        cp_index += 1
                    good_size = seq
                    next_cp = checkpoints[cp_index].size if cp_index < len(checkpoints) else -1
                expected = seq + 1
            if chunk.error is not None:
                line_no, record, reason = chunk.error
                raise LogVerificationFailed(reason, record=record if record else expected,
                                            file=name, line=base + line_no)
            if chunk.lines:
                prev = chunk.last_stored
            if chunk.tail:
                last = last_of_file and path_s == str(files[-1])
                reason = ("incomplete last record (torn write, not yet recovered by the writer)" if last
                          else "incomplete record in the middle of the log")
                raise LogVerificationFailed(reason, record=expected, file=name, line=base + chunk.lines + 1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    count = expected - 1
    if cp_index < len(checkpoints):
        raise LogVerificationFailed(
            f"log truncated: it ends at record {count} but signed checkpoint #{len(checkpoints)} "
            f"covers {checkpoints[-1].size} records",
            record=count + 1, checkpoint=len(checkpoints),
        )
    report.records = count
    report.signed_records = good_size
    report.unsigned_tail = count - good_size
    if report.unsigned_tail:
        report.notes.append(
            f"{report.unsigned_tail} newest records are chained but not yet covered by a signed checkpoint"
        )
    return report
