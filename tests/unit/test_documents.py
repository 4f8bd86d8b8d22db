"""The shared document parser: bounds, YAML readings, stream splitting (no OPA)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from jovial_guard.admission.review import MalformedReview, parse_review
from jovial_guard.documents import (
    BOUNDS,
    Bounds,
    MalformedDocument,
    go_yaml_kind,
    load_json,
    load_yaml_documents,
    read_stream,
    split_yaml_stream,
)


def parsed(data: bytes, **kwargs: Any) -> list[tuple[int, Any, str | None]]:
    return [(p.index, p.body, p.error) for p in read_stream(data, **kwargs)]


# What go-yaml v2 (Kubernetes' decoder, untyped) makes of plain scalars, from its resolve
# rules: YAML 1.1 booleans including y/n, base-prefixed and leading-zero octal integers,
# floats with or without a dot, timestamps left as strings.
@pytest.mark.parametrize("plain, kind", [
    ("y", "bool"), ("N", "bool"), ("yes", "bool"), ("Off", "bool"), ("true", "bool"),
    ("", "null"), ("~", "null"), ("null", "null"),
    ("0", "int"), ("-12", "int"), ("0x1F", "int"), ("0o17", "int"), ("0777", "int"), ("0b101", "int"), ("1_000", "int"),
    ("1e3", "float"), ("1.5", "float"), (".5", "float"), ("08", "float"), (".inf", "float"), ("-.Inf", "float"),
    ("2024-05-27", "str"), ("1:30", "str"), ("yes please", "str"), ("=", "str"), ("<<", "str"), (".", "str"),
])
def test_go_yaml_kind(plain: str, kind: str) -> None:
    assert go_yaml_kind(plain) == kind


@pytest.mark.parametrize("text, value", [
    ("a: yes", {"a": True}), ("a: 'y'", {"a": "y"}), ("a: !!str y", {"a": "y"}), ("a: 0x10", {"a": 16}),
    ("a: 1.5", {"a": 1.5}), ("a: ~", {"a": None}), ("a: '2024-05-27'", {"a": "2024-05-27"}),
    ("a: |\n  y\n", {"a": "y\n"}), ("a: &x [1]\nb: *x", {"a": [1], "b": [1]}),
])
def test_values_both_readers_agree_on(text: str, value: Any) -> None:
    assert load_yaml_documents(text) == [value]
    assert yaml.safe_load(text) == value  # PyYAML agrees, so nothing is refused


@pytest.mark.parametrize("text, phrase", [
    ("a: y", "ambiguous plain value 'y'"),
    ("a: 2024-05-27", "unquoted date"),
    ("a: 2024-05-27 10:00:00", "unquoted date"),
    ("a: 1e3", "'1e3'"),
    ("a: 1:30", "'1:30'"),
    ("a: 0o17", "'0o17'"),
    ("<<: {a: 1}", "merge key"),
    ("a: 1\na: 2", "duplicate key 'a'"),
    ("1: a", "not a string"),
    ("a: !!binary aGk=", "tag"),
    ("a: .nan", "finite"),
    ("a: 9223372036854775808", "64 bits"),
    ("a: -9223372036854775809", "64 bits"),
    ("a: &a [*a]", "no complete anchor"),
    ("a: *nowhere", "no complete anchor"),
    ("a: [", "invalid YAML"),
])
def test_refused_yaml(text: str, phrase: str) -> None:
    with pytest.raises(MalformedDocument) as err:
        load_yaml_documents(text)
    assert phrase in str(err.value)


def test_errors_name_the_line_and_path_within_the_stream() -> None:
    data = b"a: 1\n---\nkind: Pod\nspec:\n  containers:\n  - securityContext: {privileged: y}\n"
    first, (index, body, error) = parsed(data)
    assert first[2] is None and (index, body) == (1, None)
    assert error is not None and error.startswith("line 6, /spec/containers/0/securityContext/privileged:")


def test_int64_bounds_are_inclusive() -> None:
    assert load_yaml_documents("a: 9223372036854775807\nb: -9223372036854775808") == [{"a": 2**63 - 1, "b": -(2**63)}]
    assert load_json(b'{"a": 9223372036854775807}') == {"a": 2**63 - 1}


def test_depth_bound_is_exact() -> None:
    small = Bounds(max_depth=3)
    assert load_yaml_documents("a: {b: {c: 1}}", bounds=small) == [{"a": {"b": {"c": 1}}}]
    assert load_json(b'{"a": {"b": [1]}}', bounds=small) == {"a": {"b": [1]}}
    with pytest.raises(MalformedDocument, match="nested deeper than 3"):
        load_yaml_documents("a: {b: {c: []}}", bounds=small)
    with pytest.raises(MalformedDocument, match="nested deeper than 3"):
        load_json(b'{"a": {"b": {"c": []}}}', bounds=small)
    # An alias counts the depth of what it expands to.
    with pytest.raises(MalformedDocument, match="nested deeper than 3"):
        load_yaml_documents("x: &x {b: [1]}\na: {c: *x}", bounds=small)


def test_alias_expansion_is_bounded_before_anything_is_expanded() -> None:
    laughs = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(12))
    with pytest.raises(MalformedDocument, match="aliases expand to more than"):
        load_yaml_documents(laughs)
    few = Bounds(max_alias_nodes=5)
    assert load_yaml_documents("a: &a [1, 2]\nb: *a", bounds=few) == [{"a": [1, 2], "b": [1, 2]}]
    with pytest.raises(MalformedDocument, match="more than 5"):
        load_yaml_documents("a: &a [1, 2]\nb: *a\nc: *a", bounds=few)


def test_node_bound() -> None:
    with pytest.raises(MalformedDocument, match="more than 10 values"):
        load_json(json.dumps(list(range(20))).encode(), bounds=Bounds(max_nodes=10))
    with pytest.raises(MalformedDocument, match="more than 10 values"):
        load_yaml_documents(json.dumps(list(range(20))), bounds=Bounds(max_nodes=10))


def test_stream_bound_is_one_error_for_the_input() -> None:
    [(_, body, error)] = parsed(b"a: 1\n" * 100, bounds=Bounds(max_stream_bytes=100))
    assert body is None and error is not None and "larger than 100 bytes" in error


def test_one_bad_document_costs_only_itself() -> None:
    data = b"a: 1\n---\nb: \xff\n---\nc: [\n---\nd: 4\n"
    assert [(i, body, (e or "")[:12]) for i, body, e in parsed(data)] == [
        (0, {"a": 1}, ""), (1, None, "not UTF-8: b"), (2, None, "invalid YAML"), (3, {"d": 4}, "")]


def test_markers_inside_block_scalars_are_content_only_when_indented() -> None:
    data = b"a: |\n  --- kept\n---\nb: 2\n"
    assert parsed(data) == [(0, {"a": "--- kept\n"}, None), (1, {"b": 2}, None)]
    assert [line for line, _ in split_yaml_stream(data)] == [0, 2]


def test_auto_format_reads_json_and_yaml_flow() -> None:
    assert parsed(b'{"kind": "Pod"}') == [(0, {"kind": "Pod"}, None)]
    assert parsed(b"{kind: Pod}") == [(0, {"kind": "Pod"}, None)]
    [(_, body, error)] = parsed(b"{kind: Pod}", fmt="json")
    assert body is None and error is not None and error.startswith("not JSON")


def test_bom_and_empty_documents() -> None:
    assert parsed(b"\xef\xbb\xbf---\n---\n# nothing\n...\na: 1\n") == [(0, {"a": 1}, None)]
    assert parsed(b"") == []


@pytest.mark.parametrize("body, phrase", [
    (b'{"a": ' * 200 + b"1" + b"}" * 200, "nested deeper than"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "x": 9223372036854775808}}', "64 bits"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b"x" * (BOUNDS.max_body_bytes + 1), "larger than"),
])
def test_the_webhook_refuses_with_the_shared_parser(body: bytes, phrase: str) -> None:
    with pytest.raises(MalformedReview) as err:
        parse_review(body)
    assert phrase in str(err.value)


# -- properties: never a crash, never a different value -----------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=25,
)


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for doc in read_stream(data):
        assert (doc.body is None) != (doc.error is None)


@PROPERTY
@given(json_values)
def test_yaml_round_trip_is_exact_or_refused(value: Any) -> None:
    """Whatever PyYAML writes, the reader gives back the same value or refuses it by name."""
    text = yaml.safe_dump(value, default_flow_style=False)
    docs = list(read_stream(text.encode(), fmt="yaml"))
    if value is None:
        return  # an empty document
    [doc] = docs
    assert doc.error is not None or doc.body == value, (text, doc.body)


@PROPERTY
@given(json_values)
def test_json_round_trip_is_exact(value: Any) -> None:
    [doc] = list(read_stream(json.dumps(value).encode(), fmt="json"))
    assert doc.error is None and doc.body == value
