"""The OPA built-in functions a compiled (Wasm) policy asks its host for.

``opa build -t wasm`` compiles most built-ins into the module; the few it cannot (the
module's ``builtins`` export names them) are called back into the host. This policy needs
five: ``sprintf``, ``units.parse``, ``units.parse_bytes``, ``time.parse_rfc3339_ns`` and
``time.now_ns``. Each function here follows OPA 1.22's Go implementation
(``v1/topdown/strings.go``, ``parse_units.go``, ``parse_bytes.go``, ``time.go``) for the
arguments the policy can give it, and the decision corpus (every recorded input, decided by
the OPA server and by the module) holds them to it. Where OPA's built-in fails (a malformed
amount, a wrong type) the function raises :class:`BuiltinUndefined`: the host then answers
"no value", which is what a failing built-in means to OPA's evaluator (the expression is
undefined).

Arguments arrive as JSON (``opa_json_dump``) parsed with numbers kept as :class:`Num`, so
the number's own text decides integer or float formatting as it does in OPA; results go back
as JSON text (``opa_json_parse``), as long as OPA's own would be. No number of arbitrary
length ever passes through a Python ``int`` (which refuses to write out more than 4,300
digits): the amounts' arithmetic is :mod:`.wasm_bignum`'s, in decimal. An amount of more
digits than OPA could read within a decision deadline fails the evaluation (a denial)
rather than being undefined.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from .wasm_bignum import float_int_text, rat_text


class BuiltinUndefined(Exception):
    """OPA's built-in would fail for these arguments: the call has no value."""


class Num(str):
    """A JSON number kept as its text (OPA's ``ast.Number``)."""


def parse_args(text: bytes) -> Any:
    """A JSON document with numbers as :class:`Num`."""
    return json.loads(text, parse_int=Num, parse_float=Num, parse_constant=Num)


def _is_float_text(text: str) -> bool:
    return any(c in text for c in ".eE")


# -- Go's fmt, for the verbs the policy uses ----------------------------------------------

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _escape_rune(ch: str, quote: str) -> str:
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ch.isprintable():
        return ch
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable runes kept, the rest escaped Go's way."""
    return '"' + "".join(_escape_rune(ch, '"') for ch in text) + '"'


def _go_quote_rune(value: int) -> str:
    code = value if 0 <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else 0xFFFD
    return "'" + _escape_rune(chr(code), "'") + "'"


def go_float(value: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g', shortest digits): the exponent form when the
    decimal exponent is below -4 or at least 6 (``1e+06``, ``1e-05``), else plain digits."""
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + int(exponent)  # position of the decimal point in digits
    prefix = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def rego_text(value: Any) -> str:
    """OPA's ``Value.String()`` of a JSON value (objects with sorted keys)."""
    if isinstance(value, Num):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(rego_text(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{" + ", ".join(f"{go_quote(k)}: {rego_text(value[k])}" for k in sorted(value)) + "}"
    raise BuiltinUndefined(f"unexpected value {type(value).__name__}")


def _integer_text(text: str) -> str:
    """The decimal text big.Int writes for an integer's JSON text (no int: it may be long)."""
    digits = text.lstrip("+-").lstrip("0") or "0"
    return "-" + digits if text.startswith("-") and digits != "0" else digits


_INT64_DIGITS = len(str(2**63))


def _sprintf_arg(value: Any) -> tuple[str, Any]:
    """(Go type, Go value) as OPA's sprintf hands the argument to fmt.Sprintf: an int64, a
    *big.Int (kept as its text), a float64, or the number's own text when even that fails."""
    if isinstance(value, Num):
        if _is_float_text(value):
            number = float(value)
            if number in (float("inf"), float("-inf")):
                return "string", str(value)
            return "float64", number
        text = _integer_text(value)
        if len(text.lstrip("-")) <= _INT64_DIGITS and -(2**63) <= int(text) < 2**63:
            return "int64", int(text)
        return "big.Int", text
    if isinstance(value, str):
        return "string", value
    return "string", rego_text(value)


def _format_one(verb: str, kind: str, value: Any) -> str:
    """One verb of Go's fmt for one argument; a mismatch prints as fmt (or big.Int) does."""
    if kind == "string":
        if verb in "sv":
            return str(value)
        if verb == "q":
            return go_quote(value)
    elif kind == "int64":
        if verb in "vd":
            return str(value)
        if verb == "q":
            return _go_quote_rune(value)
    elif kind == "big.Int":
        if verb in "dsv":  # big.Int formats itself: decimal for these
            return str(value)
        return f"%!{verb}(big.Int={value})"
    elif kind == "float64" and verb == "v":
        return go_float(value)
    shown = go_float(value) if kind == "float64" else str(value)
    return f"%!{verb}({kind}={shown})"


_VERB = re.compile(r"%(.)", re.DOTALL)
#: How fmt names an extra argument's type (OPA passes big integers as *big.Int).
_EXTRA_TYPE = {"big.Int": "*big.Int"}


def sprintf(fmt: Any, args: Any) -> str:
    """``sprintf(format, values)`` for the verbs ``%s %v %q %d %%`` without flags or widths
    (the policy's format strings are constants and use only these)."""
    if not isinstance(fmt, str) or isinstance(fmt, Num) or not isinstance(args, list):
        raise BuiltinUndefined("sprintf wants a string and an array")
    if fmt == "%d" and len(args) == 1 and isinstance(args[0], Num) and not _is_float_text(args[0]):
        return _integer_text(args[0])
    converted = [_sprintf_arg(a) for a in args]
    out: list[str] = []
    used = 0
    pos = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[pos:match.start()])
        pos = match.end()
        verb = match.group(1)
        if verb == "%":
            out.append("%")
            continue
        if verb not in "svqd":
            raise BuiltinUndefined(f"sprintf verb %{verb} is not supported by this host")
        if used >= len(converted):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(verb, *converted[used]))
        used += 1
    out.append(fmt[pos:])
    if used < len(converted):
        extra = ", ".join(f"{_EXTRA_TYPE.get(k, k)}={go_float(v) if k == 'float64' else v}"
                          for k, v in converted[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# -- units ---------------------------------------------------------------------------------

_MAX_EXPONENT_DIGITS = 6
#: OPA's ``extractNumAndUnit`` as patterns: the number runs over digits, points, signs and
#: any e/E followed by a digit or sign; each exponent may have at most six digits.
_NUMBER_PART = re.compile(r"[0-9.+\-]*+(?:[eE](?=[0-9+\-])[0-9.+\-]*+)*+")  # possessive: no per-character stack
_LONG_EXPONENT = re.compile(rf"[eE][+-]?[0-9]{{{_MAX_EXPONENT_DIGITS + 1}}}")


def _split_amount(text: str) -> tuple[str, str]:
    """OPA's ``extractNumAndUnit``: the leading number and the unit after it."""
    match = _NUMBER_PART.match(text)
    num = match.group() if match else ""
    if _LONG_EXPONENT.search(num):
        raise BuiltinUndefined("exponent too large")
    return num, text[len(num):]


_SI = {"k": 10**3, "M": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18}
_BIN = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50, "ei": 2**60}
_MILLI = Decimal(0.001)  # OPA multiplies by the float64 nearest 0.001, exactly


def _amount(raw: Any, builtin: str) -> str:
    if not isinstance(raw, str) or isinstance(raw, Num):
        raise BuiltinUndefined(f"{builtin} wants a string")
    return raw


def units_parse(raw: Any) -> Num:
    """``units.parse``: an amount with an SI or binary suffix, as an exact number."""
    text = _amount(raw, "units.parse").replace('"', "")
    if " " in text:
        raise BuiltinUndefined("spaces not allowed")
    num, unit = _split_amount(text)
    if num == "":
        raise BuiltinUndefined("no amount provided")
    if len(unit) > 1:
        unit = unit[:1] + unit[1:].lower()
    factor: Decimal
    if unit == "m":
        factor = _MILLI
    elif unit == "":
        factor = Decimal(1)
    elif unit in ("M",) or unit.lower() in ("k", "g", "t", "p", "e") and unit != "m":
        factor = Decimal(_SI["M" if unit == "M" else unit.lower()])
    elif unit.lower() in _BIN and unit[0] in (unit[0].lower(), unit[0].upper()) and unit[1] == "i":
        factor = Decimal(_BIN[unit.lower()])
    else:
        raise BuiltinUndefined(f"unit {unit} not recognized")
    try:
        return Num(rat_text(num, factor))
    except ValueError:
        raise BuiltinUndefined("could not parse amount to a number") from None


_BYTE_UNITS = {
    "": 1, "kb": 10**3, "k": 10**3, "kib": 2**10, "ki": 2**10, "mb": 10**6, "m": 10**6, "mib": 2**20,
    "mi": 2**20, "gb": 10**9, "g": 10**9, "gib": 2**30, "gi": 2**30, "tb": 10**12, "t": 10**12,
    "tib": 2**40, "ti": 2**40, "pb": 10**15, "p": 10**15, "pib": 2**50, "pi": 2**50, "eb": 10**18,
    "e": 10**18, "eib": 2**60, "ei": 2**60,
}


def units_parse_bytes(raw: Any) -> Num:
    """``units.parse_bytes``: a byte amount, as an integer (big.Float, 64-bit mantissa)."""
    text = _amount(raw, "units.parse_bytes").lower().replace('"', "")
    if " " in text:
        raise BuiltinUndefined("spaces not allowed")
    num, unit = _split_amount(text)
    if num == "":
        raise BuiltinUndefined("no byte amount provided")
    if unit not in _BYTE_UNITS:
        raise BuiltinUndefined(f"byte unit {unit} not recognized")
    try:
        return Num(float_int_text(num, _BYTE_UNITS[unit]))
    except ValueError:
        raise BuiltinUndefined("could not parse byte amount to a number") from None


# -- time ----------------------------------------------------------------------------------

#: Go's time.Parse reads ASCII digits only (``\d`` alone would take any script's).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))", re.ASCII)
#: The instants OPA turns into nanoseconds (int64); outside them the built-in fails.
_NS_RANGE = range(-(2**63), 2**63)


def parse_rfc3339_ns(raw: Any) -> Num:
    """``time.parse_rfc3339_ns``: nanoseconds since the epoch of an RFC 3339 time."""
    if not isinstance(raw, str) or isinstance(raw, Num):
        raise BuiltinUndefined("time.parse_rfc3339_ns wants a string")
    match = _RFC3339.fullmatch(raw)
    if not match:
        raise BuiltinUndefined(f"cannot parse {raw!r} as RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        base = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise BuiltinUndefined(str(exc)) from None
    if match.group(9):
        offset_h, offset_m = int(match.group(10)), int(match.group(11))
        if offset_h > 24 or offset_m > 60:  # the bounds Go's time.Parse applies
            raise BuiltinUndefined("time zone offset out of range")
        offset = (offset_h * 60 + offset_m) * 60 * (1 if match.group(9) == "+" else -1)
    else:
        offset = 0
    seconds = (base - datetime(1970, 1, 1)).days * 86400 + hour * 3600 + minute * 60 + second - offset
    fraction = int((match.group(7) or "")[:9].ljust(9, "0"))  # Go keeps nanoseconds, drops the rest
    nanoseconds = seconds * 10**9 + fraction
    if nanoseconds not in _NS_RANGE:
        raise BuiltinUndefined("time outside of valid range")
    return Num(str(nanoseconds))


def now_ns(clock: Callable[[], int] = time.time_ns) -> Num:
    return Num(str(clock()))


#: What the host offers, by the name the module's ``builtins`` export uses.
BUILTINS: dict[str, Callable[..., Any]] = {
    "sprintf": sprintf,
    "units.parse": units_parse,
    "units.parse_bytes": units_parse_bytes,
    "time.parse_rfc3339_ns": parse_rfc3339_ns,
    "time.now_ns": now_ns,
}
