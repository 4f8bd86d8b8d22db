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
from typing import Any, Literal, cast

import orjson
import yaml  # type: ignore[import-untyped]

from .errors import MalformedInput


@dataclass(frozen=True)
class Bounds:
    """Limits on one input; every one is far above any real Kubernetes object."""

    #: One request body (an AdmissionReview carries object and oldObject, each capped
    #: by the API server at ~1.5 MiB).
    max_body_bytes: int = 4 * 1024 * 1024
    #: One file or stdin for ``check`` (``kubectl get pods -A -o yaml`` of a large cluster).
    max_stream_bytes: int = 64 * 1024 * 1024
    #: Nesting of maps and lists; the deepest real pod field (a CronJob inside an
    #: AdmissionReview, down to an affinity term's values) is about 20.
    max_depth: int = 100
    #: Maps, lists and scalars of one document after alias expansion (a List of a few
    #: thousand pods stays below it).
    max_nodes: int = 2_000_000
    #: Nodes reached only through YAML aliases: bounds "billion laughs" expansion.
    max_alias_nodes: int = 100_000


BOUNDS = Bounds()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class MalformedDocument(MalformedInput):
    """The bytes are not a document jovial_guard will decide; the message says why."""


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


# -- YAML --------------------------------------------------------------------------------

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_GO_BOOLS = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE",
             "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"}
_GO_NULLS = {"", "~", "null", "Null", "NULL"}
_GO_SPECIAL_FLOATS = {s + v for s in ("", "+", "-") for v in (".inf", ".Inf", ".INF")} | {".nan", ".NaN", ".NAN"}
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[1-9][0-9]*|0)")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_KIND_OF_TAG = {_CORE + "null": "null", _CORE + "bool": "bool", _CORE + "int": "int", _CORE + "float": "float",
                _CORE + "str": "str"}
_MARKER = re.compile(rb"^(?:%[^\n]*\n)*(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.M)


def go_yaml_kind(plain: str) -> str:
    """What Kubernetes' YAML decoder (go-yaml v2, decoding untyped) makes of a plain scalar."""
    if plain in _GO_NULLS:
        return "null"
    if plain in _GO_BOOLS:
        return "bool"
    if plain in _GO_SPECIAL_FLOATS:
        return "float"
    if plain[:1] in set("+-.0123456789"):
        digits = plain.replace("_", "")
        if _GO_INT.fullmatch(digits):
            return "int"
        if _GO_FLOAT.fullmatch(digits):
            return "float"
    return "str"


_AMBIGUOUS_HINT = {
    "timestamp": "an unquoted date or time (a string to Kubernetes, a date to other YAML tools)",
    "merge": "a merge key '<<' (YAML tools merge differently)",
}


_NOT_ROOT = object()


@dataclass
class _Frame:
    value: dict[str, Any] | list[Any]
    path: str
    anchor: str | None
    nodes: int = 1
    height: int = 1
    key: str | None = None  # mapping: the key waiting for its value
    keys_seen: set[str] | None = None


class _YamlBuilder:
    """Builds JSON values from a YAML event stream, enforcing the rules of this module."""

    def __init__(self, bounds: Bounds, line: int) -> None:
        self.bounds = bounds
        self.line = line
        self.loader = yaml.SafeLoader("")
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, nodes, height
        self.stack: list[_Frame] = []
        self.alias_nodes = 0
        self.total_nodes = 0

    def fail(self, event: Any, problem: str) -> MalformedDocument:
        mark = getattr(event, "start_mark", None)
        where = [f"line {mark.line + 1 + self.line}"] if mark is not None else []
        path = self._path() if self.stack else ""
        where += [path if len(path) <= 100 else f"{path[:48]}...{path[-48:]}"] if path else []
        return MalformedDocument(f"{', '.join(where)}: {problem}" if where else problem)

    def _path(self) -> str:
        if not self.stack:
            return ""
        top = self.stack[-1]
        if top.keys_seen is not None:
            return f"{top.path}/{top.key}" if top.key is not None else top.path or "/"
        return f"{top.path}/{len(top.value)}"

    def _count(self, event: Any, nodes: int, height: int) -> None:
        self.total_nodes += nodes
        if self.total_nodes > self.bounds.max_nodes:
            raise self.fail(event, f"more than {self.bounds.max_nodes} values in one document")
        if len(self.stack) + height > self.bounds.max_depth:
            raise self.fail(event, f"nested deeper than {self.bounds.max_depth} levels")

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        tag, value = event.tag, event.value
        if event.implicit[0] and tag in (None, "!"):
            resolved = self.loader.resolve(yaml.ScalarNode, value, (True, False))
            pyyaml_kind = _KIND_OF_TAG.get(resolved, resolved.rsplit(":", 1)[-1])
            go_kind = go_yaml_kind(value)
            if pyyaml_kind != go_kind:
                hint = _AMBIGUOUS_HINT.get(pyyaml_kind) or (
                    f"Kubernetes reads it as {go_kind}, other YAML tools as {pyyaml_kind}")
                raise self.fail(event, f"ambiguous plain value {value!r}, {hint}: quote it or write what you mean")
            tag = resolved
        elif tag in (None, "!"):
            tag = _CORE + "str"
        if tag not in _SCALAR_TAGS:
            raise self.fail(event, f"YAML tag {tag} is not allowed (only JSON values)")
        if tag == _CORE + "str":
            if _SURROGATE.search(value):
                raise self.fail(event, "string holds an unpaired surrogate escape")
            return value
        try:
            built = self.loader.yaml_constructors[tag](self.loader, yaml.ScalarNode(tag, value))
        except (ValueError, KeyError, TypeError, yaml.YAMLError):
            raise self.fail(event, f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}") from None
        if isinstance(built, float) and not math.isfinite(built):
            raise self.fail(event, f"{value!r} is not a finite number")
        if isinstance(built, int) and not isinstance(built, bool) and not INT64_MIN <= built <= INT64_MAX:
            raise self.fail(event, f"integer {value} does not fit in 64 bits")
        return built

    def _attach(self, event: Any, value: Any, nodes: int, height: int, *, is_key_scalar: bool = False) -> None:
        """Put a finished node into its parent (a list, or a map as key or value)."""
        top = self.stack[-1]
        top.nodes += nodes
        if height >= top.height:
            top.height = height + 1
        container, seen = top.value, top.keys_seen
        if isinstance(container, list) or seen is None:
            cast(list[Any], container).append(value)
            return
        if top.key is None:
            if not is_key_scalar or not isinstance(value, str):
                raise self.fail(event, f"mapping key {value!r} is not a string; quote it")
            if value in seen:
                raise self.fail(event, f"duplicate key {value!r}")
            seen.add(value)
            top.key = value
            return
        container[top.key] = value
        top.key = None

    def _awaits_key(self) -> bool:
        return bool(self.stack) and self.stack[-1].keys_seen is not None and self.stack[-1].key is None

    def _place(self, event: Any, value: Any, nodes: int, height: int, *, is_key: bool = False) -> Any:
        """Attach to the parent; return the value when it is the document's root."""
        if not self.stack:
            return value
        self._attach(event, value, nodes, height, is_key_scalar=is_key)
        return _NOT_ROOT

    def build(self, events: Iterator[Any]) -> Iterator[Any]:
        """Yield each document of the event stream (None for an empty one)."""
        root: Any = None
        for event in events:
            kind = type(event)
            placed: Any = _NOT_ROOT
            if kind is yaml.ScalarEvent:
                is_key = self._awaits_key()
                self._count(event, 1, 0)
                value = self._scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, 0)
                placed = self._place(event, value, 1, 0, is_key=is_key)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if self._awaits_key():
                    raise self.fail(event, "mapping key is a map or list; keys must be strings")
                if event.tag not in (None, "!", _CORE + "map", _CORE + "seq"):
                    raise self.fail(event, f"YAML tag {event.tag} is not allowed (only JSON values)")
                self._count(event, 1, 1)
                mapping = kind is yaml.MappingStartEvent
                self.stack.append(_Frame({} if mapping else [], self._path(), event.anchor,
                                         keys_seen=set() if mapping else None))
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = self.stack.pop()
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (frame.value, frame.nodes, frame.height)
                placed = self._place(event, frame.value, frame.nodes, frame.height)
            elif kind is yaml.AliasEvent:
                if event.anchor not in self.anchors:
                    raise self.fail(event, f"alias *{event.anchor} has no complete anchor (undefined or recursive)")
                if self._awaits_key():
                    raise self.fail(event, "an alias cannot be a mapping key")
                value, nodes, height = self.anchors[event.anchor]
                self.alias_nodes += nodes
                if self.alias_nodes > self.bounds.max_alias_nodes:
                    raise self.fail(event, f"aliases expand to more than {self.bounds.max_alias_nodes} values")
                self._count(event, nodes, height)
                placed = self._place(event, value, nodes, height)
            elif kind is yaml.DocumentStartEvent:
                root, self.anchors, self.alias_nodes, self.total_nodes = None, {}, 0, 0
            elif kind is yaml.DocumentEndEvent:
                yield root
            if placed is not _NOT_ROOT:
                root = placed


def load_yaml_documents(text: str, *, line: int = 0, bounds: Bounds = BOUNDS) -> list[Any]:
    """Every document of one YAML text (normally one chunk of a stream); None for empty ones."""
    builder = _YamlBuilder(bounds, line)
    try:
        return list(builder.build(yaml.parse(text, Loader=_fast_loader())))
    except MalformedDocument:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1 + line}, column {mark.column + 1})" if mark is not None else ""
        raise MalformedDocument(f"invalid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise MalformedDocument(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _fast_loader() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[no-any-return]


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
    for start, end in zip(bounds, bounds[1:]):
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

