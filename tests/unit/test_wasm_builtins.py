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

import pytest

from jovial_guard.policy.opa_process import find_opa
from jovial_guard.policy.wasm_bignum import MAX_DIGITS, TooManyDigits
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
#: Amounts a pod can state that Go's big.Rat / big.Float read: exponents at and past their
#: bounds, results of a million digits, forms they refuse.
HOSTILE_AMOUNTS = ["1e9999", "1E+400", "0.000000001", "1Ei", "9e18", "-1", "1e-9999", "+1", ".5", "5.", "0x10", "1_000",
                   "NaN", "Infinity", "-0", "-1e-12", "-1e-12m", "1e1000000", "1e999999", "1e-999999", "1.5e-999999",
                   "1.55e-999999", "1.00e-999999", "0." + "0" * 999_998 + "1", "9" * 100_000, "1e5e5", "1e+-5", "١",
                   "18446744073709551617" + "0" * 300 + "e-300", "7.77e57Ei", "123456789.987654321e-200", "1e+" * 1000]
TIMES = ["2026-12-02T05:00:00Z", "2026-12-02T05:00:00.123456789+01:30", "1969-12-31T23:59:59.5-00:00",
         "2026-02-30T00:00:00Z", "2026-12-02 05:00:00Z", "2026-12-02T05:00:00", "2026-12-02t05:00:00z",
         "2026-12-02T05:00:00.1234567891Z", "2026-12-02T24:00:00Z", "2026-12-02T05:00:00+24:00", "2026-12-02T05:60:00Z",
         # int64 nanoseconds: 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z
         "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "1677-09-21T00:12:43.145224191Z",
         "1677-09-21T00:12:43.145224192Z", "2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:16.854775808Z",
         "9999-12-31T23:59:59Z", "\u0662\u0660\u0662\u0666-12-02T05:00:00Z", "2026-12-02T05:00:00." + "1" * 100_000 + "Z"]


def _opa(query: str, value: Any) -> Any:
    """``query`` over input ``value`` in the real opa; None when undefined."""
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-I", query], input=json.dumps(value),
                          capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(proc.stdout, parse_int=str, parse_float=str).get("result")  # numbers as their text
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
    values = UNITS + HOSTILE_AMOUNTS
    assert [_num(units_parse, v) for v in values] == _each("units.parse", values)


def test_units_parse_bytes_matches_opa() -> None:
    values = BYTES + HOSTILE_AMOUNTS
    assert [_num(units_parse_bytes, v) for v in values] == _each("units.parse_bytes", values)


def test_an_amount_beyond_the_digit_bound_is_a_failure_not_undefined() -> None:
    """Undefined would read as a malformed amount; the evaluation must fail instead."""
    for function in (units_parse, units_parse_bytes):
        with pytest.raises(TooManyDigits):
            function("9" * (MAX_DIGITS + 1))
    assert units_parse_bytes("0." + "0" * (2 * MAX_DIGITS) + "1") == "0"  # leading zeros are no digits
    with pytest.raises(BuiltinUndefined):  # big.Rat's exponent bound: undefined, as in OPA
        units_parse("0." + "0" * (2 * MAX_DIGITS) + "1")


def test_sprintf_of_numbers_python_will_not_write_out_matches_opa() -> None:
    """Integers past int64 reach fmt as *big.Int; past 4,300 digits Python's int will not
    turn them into text, so the host keeps their digits (arguments as raw JSON text)."""
    big = "9" * 5000
    cases = [("%v|%d|%s", f"[{big}, -{big}, 1{big}]"), ("%q", f"[{big}]"), ("%d", f"[-{big}]"),
             ("%s", f'["a", {big}, 5, 1.5]'), ("%v %v", "[1e400, 1e-400]"), ("%d %v", "[-0, 9223372036854775808]")]
    document = "[" + ", ".join(f'{{"format": {json.dumps(f)}, "args": {a}}}' for f, a in cases) + "]"
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-I", "[sprintf(c.format, c.args) | some c in input]"],
                          input=document, capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert [sprintf(f, parse_args(a.encode())) for f, a in cases] == theirs


def test_parse_rfc3339_ns_matches_opa() -> None:
    assert [_num(parse_rfc3339_ns, v) for v in TIMES] == _each("time.parse_rfc3339_ns", TIMES)


def _num(function: Any, value: str) -> Any:
    try:
        return str(function(value))
    except BuiltinUndefined:
        return None


def test_the_opa_binary_is_the_pinned_one() -> None:
    assert Path(find_opa()).exists()
