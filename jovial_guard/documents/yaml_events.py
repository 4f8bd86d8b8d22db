"""YAML documents as JSON values, built from the parser's events within :data:`BOUNDS`.

Building from events (instead of letting PyYAML construct) is what makes the bounds hold
before any work is done: depth, node count and alias expansion are counted as the events
arrive, and every plain scalar is resolved twice, as PyYAML and as Kubernetes' go-yaml v2
would, so a value the two read differently is refused (see the package docstring).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import yaml

from .limits import BOUNDS, INT64_MAX, INT64_MIN, Bounds, MalformedDocument

_SURROGATE = re.compile("[\ud800-\udfff]")

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
#: libyaml's parser when PyYAML was built with it (the events are the same).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
            resolved = self.loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
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

    def _awaits_key(self) -> bool:  # the next node is a mapping key
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
        for event in events:  # dispatch on the exact class: this loop runs once per node
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
        return list(builder.build(yaml.parse(text, Loader=_LOADER)))
    except MalformedDocument:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1 + line}, column {mark.column + 1})" if mark is not None else ""
        raise MalformedDocument(f"invalid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise MalformedDocument(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
