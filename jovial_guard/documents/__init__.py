"""The one parser for every document jovial_guard decides: JSON and YAML, bounded.

``jovial-guard check`` (files, stdin) and the admission webhook (request bodies) both read
through here, so one set of :data:`BOUNDS` and one set of rules decides what is a document:

* bytes must be UTF-8 (what the API server and kubectl accept);
* nesting, node count and YAML alias expansion are bounded *before* anything is built, so a
  deep or "billion laughs" document costs a bounded amount of work and is refused by name;
* values are JSON values only: string keys, finite floats, integers that fit Kubernetes'
  int64, no lone surrogates, no YAML tags beyond the core ones;
* a YAML plain scalar that YAML tools read differently is refused, not guessed at.
  Kubernetes decodes YAML with go-yaml v2 (YAML 1.1): ``y``/``n`` are booleans there but
  strings to PyYAML; ``2024-05-27`` is a date to PyYAML and a string to go-yaml;
  ``1e3`` and ``08`` are numbers to go-yaml and strings to PyYAML; ``1:30`` is a number to
  PyYAML only. Deciding either reading would let a manifest mean one thing to the policy
  and another to the cluster (``privileged: y`` is *true* to Kubernetes), so the document
  is an error that says which value to quote. Duplicate keys and merge keys (``<<``), which
  tools also resolve differently, are refused for the same reason.

A YAML stream is split at its document markers before decoding, so one bad document (bad
bytes, bad syntax, past a bound) is an error for that document only and the rest of the
stream is still read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .limits import BOUNDS, INT64_MAX, INT64_MIN, Bounds, MalformedDocument
from .yaml_events import go_yaml_kind, load_yaml_documents

__all__ = [
    "BOUNDS", "Bounds", "Format", "MalformedDocument", "Parsed", "check_tree", "go_yaml_kind", "load_json",
    "load_yaml_documents", "read_stream", "split_yaml_stream",
]

#: A document marker line (``---`` or ``...``, with any directives before it) at column 0:
#: by the YAML spec it always ends the document, even inside a block scalar.
_MARKER = re.compile(rb"^(?:%[^\n]*\n)*(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.M)

# -- JSON --------------------------------------------------------------------------------


def check_tree(value: Any, *, bounds: Bounds = BOUNDS) -> None:
    """Raise MalformedDocument unless ``value`` is a bounded tree of JSON values.

    Walks level by level (no recursion, no per-node tuples): it runs on every admission
    request.
    """
    level: list[Any] = [value]
    depth = nodes = 0
    while level:
        depth += 1
        nodes += len(level)
        if nodes > bounds.max_nodes:
            raise MalformedDocument(f"more than {bounds.max_nodes} values in one document")
        if depth > bounds.max_depth and any(type(n) is dict or type(n) is list for n in level):
            raise MalformedDocument(f"nested deeper than {bounds.max_depth} levels")
        below: list[Any] = []
        for node in level:
            kind = type(node)
            if kind is dict:
                below.extend(node.values())
            elif kind is list:
                below.extend(node)
            elif kind is int:
                if not INT64_MIN <= node <= INT64_MAX:
                    raise MalformedDocument(f"integer {node} does not fit in 64 bits")
            elif kind is float and not math.isfinite(node):
                raise MalformedDocument(f"number {node} is not finite")
        level = below


def load_json(data: bytes, *, bounds: Bounds = BOUNDS) -> Any:
    """One JSON document from UTF-8 bytes, within ``bounds``."""
    if len(data) > bounds.max_stream_bytes:
        raise MalformedDocument(f"larger than {bounds.max_stream_bytes} bytes")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedDocument(f"not JSON: {_json_problem(data, exc)}") from None
    check_tree(value, bounds=bounds)
    return value


def _json_problem(data: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8 (byte 0x{data[bad.start]:02x} at offset {bad.start})"
    if "recursion" in str(exc):
        return "nested too deeply"
    return str(exc)[:200]


# -- streams -----------------------------------------------------------------------------


@dataclass
class Parsed:
    """One document of a stream: its body, or why it could not be read."""

    index: int
    line: int
    body: Any = None
    error: str | None = None


def split_yaml_stream(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(first line, bytes) of each part between document markers (``---``, ``...``)."""
    starts = [m.start() for m in _MARKER.finditer(data)]
    bounds = ([0] if not starts or starts[0] != 0 else []) + starts + [len(data)]
    line = 0
    for start, end in zip(bounds, bounds[1:], strict=False):
        yield line, data[start:end]
        line += data.count(b"\n", start, end)


def _decode(chunk: bytes, line: int) -> str:
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = line + chunk.count(b"\n", 0, exc.start) + 1
        raise MalformedDocument(f"not UTF-8: byte 0x{chunk[exc.start]:02x} on line {bad_line}") from None


Format = Literal["json", "yaml", "auto"]


def read_stream(data: bytes, *, fmt: Format = "auto", bounds: Bounds = BOUNDS) -> Iterator[Parsed]:
    """Every non-empty document of a file or stdin, in order; bad ones carry ``error``."""
    if len(data) > bounds.max_stream_bytes:
        yield Parsed(0, 1, error=f"input is larger than {bounds.max_stream_bytes} bytes; split it")
        return
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if fmt == "json":
        try:
            yield Parsed(0, 1, body=load_json(data, bounds=bounds))
        except MalformedDocument as exc:
            yield Parsed(0, 1, error=str(exc))
        return
    if fmt == "auto" and data.lstrip()[:1] in (b"{", b"["):
        # kubectl's -o json; a YAML flow mapping also starts with "{", so only a JSON
        # syntax error falls through to the YAML reader (a bound is final).
        try:
            yield Parsed(0, 1, body=load_json(data, bounds=bounds))
            return
        except MalformedDocument as exc:
            if not str(exc).startswith("not JSON"):
                yield Parsed(0, 1, error=str(exc))
                return
    index = 0
    for line, chunk in split_yaml_stream(data):
        if chunk.startswith(b"..."):
            # A document end marker closes the previous document; the rest of its
            # line is a comment.
            newline = chunk.find(b"\n")
            chunk, line = (b"", line) if newline < 0 else (chunk[newline + 1 :], line + 1)
        try:
            documents = load_yaml_documents(_decode(chunk, line), line=line, bounds=bounds)
        except MalformedDocument as exc:
            yield Parsed(index, line + 1, error=str(exc))
            index += 1
            continue
        for body in documents:
            if body is None:
                continue
            yield Parsed(index, line + 1, body=body)
            index += 1
