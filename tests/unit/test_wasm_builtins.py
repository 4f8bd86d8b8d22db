"""The host's built-ins give what OPA's own give, asked of the real opa on the same values.

The compiled policy calls these five back into the host; the decision corpus covers what
the policy passes them today, these cases the edges (every fmt verb mismatch, big and float
numbers, escapes, odd amounts and times) so a policy change cannot walk into a difference.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from jovial_guard.policy.opa_process import find_opa
from jovial_guard.policy.wasm_builtins import (
    BuiltinUndefined,
    parse_args,
    parse_rfc3339_ns,
    sprintf,
    units_parse,
    units_parse_bytes,
)

SPRINTF = [
    ("%s|%v|%q|%d", '["a\\"b\\u00ad\\u0001é😀", 5, 65, 1.5]'),
    ("%s %q %d %v", "[12345678901234567890123, 12345678901234567890123, 1e3, 1.0]"),
    ("%v %v %v %v %v", "[1000000.0, 0.0001, 0.00001, 123456.5, -2.5e-7]"),
    ("%v|%v|%v|%v|%s", '[{"b": [1, 2.5, null], "a": true}, [], {}, false, {"x\\ty": "q\\""}]'),
    ("%d %q %s", "[-7, -1, 1114112]"),
    ("%s %s", '["only one"]'),
    ("%s", '["a", "extra", 3]'),
    ("100%% %s", '["done"]'),
    ("%d", "[42]"),
    ("%d", "[42.0]"),
]
UNITS = ["100m", "1.5", "2k", "2K", "3Ki", "3KI", "4M", "4Mi", "5mi", "1e3m", "+.5k", "5.", "1..5", "12 Gi", "",
         "7x", "0.1m", "1/2", "-3Gi", "1e", "1e-3k", '"2"Gi', "9999999999999999999999Ei"]
BYTES = ["1", "1k", "1KiB", "0.3Gi", "2.5MB", "7e-1kib", "1e3", "12 Gi", "1..5", "xb", "0.1", "123456789.987654321G"]
TIMES = ["2026-12-02T05:00:00Z", "2026-12-02T05:00:00.123456789+01:30", "1969-12-31T23:59:59.5-00:00",
         "2026-02-30T00:00:00Z", "2026-12-02 05:00:00Z", "2026-12-02T05:00:00", "2026-12-02t05:00:00z",
         "2026-12-02T05:00:00.1234567891Z", "2026-12-02T24:00:00Z", "2026-12-02T05:00:00+24:00", "2026-12-02T05:60:00Z"]


def _opa(query: str, value: Any) -> Any:
    """``query`` over input ``value`` in the real opa; None when undefined."""
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-I", query], input=json.dumps(value),
                          capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(proc.stdout).get("result")
    return result[0]["expressions"][0]["value"] if result else None


def _ours(function: Any, *args: Any) -> Any:
    try:
        return json.loads(str(function(*args)))
    except BuiltinUndefined:
        return None
    except ValueError:
        return str(function(*args))


def test_sprintf_matches_opa() -> None:
    cases = [{"format": f, "args": json.loads(a)} for f, a in SPRINTF]
    theirs = _opa("[sprintf(c.format, c.args) | some c in input]", cases)
    ours = [sprintf(f, parse_args(a.encode())) for f, a in SPRINTF]
    assert ours == theirs


def _each(builtin: str, values: list[str]) -> list[Any]:
    """Each value's result, or None where OPA's built-in fails (a failing built-in is undefined)."""
    answer = _opa(f'{{v: r | some v in input; r := {builtin}(v)}}', values)
    return [answer.get(v) for v in values]


def test_units_parse_matches_opa() -> None:
    theirs = _each("units.parse", UNITS)
    ours = [_num(units_parse, v) for v in UNITS]
    assert ours == theirs


def test_units_parse_bytes_matches_opa() -> None:
    assert [_num(units_parse_bytes, v) for v in BYTES] == _each("units.parse_bytes", BYTES)


def test_parse_rfc3339_ns_matches_opa() -> None:
    assert [_num(parse_rfc3339_ns, v) for v in TIMES] == _each("time.parse_rfc3339_ns", TIMES)


def _num(function: Any, value: str) -> Any:
    try:
        return json.loads(function(value))
    except BuiltinUndefined:
        return None


def test_the_opa_binary_is_the_pinned_one() -> None:
    assert Path(find_opa()).exists()
