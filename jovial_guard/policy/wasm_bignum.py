"""Go's ``math/big`` as OPA's ``units.parse`` and ``units.parse_bytes`` use it, text to text.

OPA reads an amount's number with ``big.Rat.SetString`` (``units.parse``: exact) or
``big.Float.SetString`` (``units.parse_bytes``: a 64-bit mantissa, the power of five of a
decimal exponent computed in 128 bits), multiplies it by the unit and hands the result on
as decimal text (``json.Number``), which is what crosses into the compiled policy
(``opa_json_parse``). That text can be long: ``"1e999999"`` is a number of a million
digits, and the OPA server compares it like any other. Python's ``int`` neither reads nor
writes that much text (``sys.int_max_str_digits``; its conversion is quadratic anyway), so
long numbers here stay in :mod:`decimal` (libmpdec: exact in an unbounded context, with
near-linear multiplication) and only numbers of a few machine words become ``int``. The
exact context traps every rounding, so a mistake here stops the evaluation (a denial)
instead of giving a wrong number.
"""

from __future__ import annotations

import math
import re
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_DOWN,
    ROUND_HALF_UP,
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
)

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN,
                 traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Inexact, Rounded, Clamped])
#: For Rat.FloatString's rounding only: half away from zero, as Go rounds it.
_HALF_AWAY = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_UP,
                     traps=[InvalidOperation, DivisionByZero, Overflow])
_TEN_PLACES = Decimal("1E-10")
_TWO = Decimal(2)

#: What both SetStrings accept of the characters an amount's number is cut from
#: (``[0-9.eE+-]``): a sign, digits with at most one point, an optional exponent.
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]{1,9}))?")
#: ``big.Rat.SetString`` refuses a decimal exponent (after the point is accounted) beyond this.
RAT_MAX_EXP10 = 10**6
#: Mantissas longer than this (from the first non-zero digit) fail the evaluation instead of
#: being computed. Go reads decimal digits in quadratic time: OPA needs about 5 s for a
#: million of them, past any decision deadline, so the OPA server gives no decision either;
#: here the cost is linear (about 0.2 s at the bound), but not free.
MAX_DIGITS = 1_000_000
#: ``big.Float``'s default precision, and the one its powers of five are computed with.
FLOAT_PREC = 64


class TooManyDigits(ArithmeticError):
    """A mantissa beyond :data:`MAX_DIGITS`: a failure of the evaluation (a denial), not an
    undefined built-in (OPA would not call the amount malformed)."""


def parse_decimal(text: str) -> tuple[bool, Decimal, int]:
    """(negative, mantissa digits as an integer, exponent): ``text`` = ±digits × 10^exponent.
    ValueError where Go's SetString fails on the syntax (no digit, two points, a bare e)."""
    match = _NUMBER.fullmatch(text)
    if not match or not (match.group(2) or match.group(3)):
        raise ValueError(f"{text[:40]!r} is not a decimal number")
    sign, whole, fraction, exponent = match.groups()
    fraction = fraction or ""
    digits = Decimal(whole + fraction) if whole + fraction else Decimal(0)
    if digits.adjusted() >= MAX_DIGITS:
        raise TooManyDigits(f"an amount of {digits.adjusted() + 1} digits is longer than this host "
                            f"evaluates ({MAX_DIGITS}); OPA itself takes seconds over one")
    return sign == "-", digits, int(exponent or 0) - len(fraction)


def rat_text(number: str, factor: Decimal) -> str:
    """``big.Rat.SetString(number)`` × ``factor`` written as ``units.parse`` writes it: the
    integer's digits (``Num().String()``), else ``FloatString(10)`` (ten places, half away
    from zero, the sign kept on a value that rounds to zero)."""
    negative, digits, exp10 = parse_decimal(number)
    if digits.is_zero():
        return "0"
    if abs(exp10) > RAT_MAX_EXP10:
        raise ValueError("exponent beyond what big.Rat.SetString accepts")
    value = _EXACT.multiply(digits.scaleb(exp10, _EXACT), factor)
    whole = value.to_integral_value(rounding=ROUND_DOWN, context=_EXACT)
    if whole == value:
        text = format(whole, "f")
    else:
        text = format(value.quantize(_TEN_PLACES, context=_HALF_AWAY), "f")
    return "-" + text if negative else text


def float_int_text(number: str, factor: int) -> str:
    """``big.Float.SetString(number)`` × ``factor`` (precision 64) truncated by ``Int``,
    written in decimal: ``units.parse_bytes``."""
    negative, digits, exp10 = parse_decimal(number)
    if digits.is_zero():
        return "0"
    mantissa, exp2 = _float_set_string(digits, exp10)
    mantissa, exp2 = round_bits(mantissa * factor, exp2, FLOAT_PREC)
    if exp2 >= 0:
        text = format(_EXACT.multiply(Decimal(mantissa), _EXACT.power(_TWO, exp2)), "f")
    else:
        text = str(mantissa >> -exp2)  # toward zero; fewer than 20 digits
    return "-" + text if negative and text != "0" else text


def round_bits(mantissa: int, exp2: int, bits: int, *, sticky: bool = False) -> tuple[int, int]:
    """``mantissa`` × 2^``exp2`` rounded to ``bits`` significant bits, ties to even
    (big.Float's ToNearestEven). ``sticky``: the true value lies a little above
    (bits below ``mantissa`` that are not all zero)."""
    extra = mantissa.bit_length() - bits
    if extra <= 0:
        return mantissa, exp2
    kept, rest = mantissa >> extra, mantissa & ((1 << extra) - 1)
    half = 1 << (extra - 1)
    if rest > half or (rest == half and (sticky or kept & 1)):
        kept += 1
        if kept.bit_length() > bits:
            kept >>= 1
            extra += 1
    return kept, exp2 + extra


def _float_set_string(digits: Decimal, exp10: int) -> tuple[int, int]:
    """Go's ``Float.scan`` at precision 64: the full mantissa times 2^exp10, then once
    rounded: alone, or multiplied or divided by ``pow5(|exp10|)`` (128 bits)."""
    if exp10 == 0:
        return _round_ratio(digits, 1, 0, FLOAT_PREC)
    five, five_exp2 = _pow5(abs(exp10), FLOAT_PREC + 64)
    if exp10 > 0:
        return _round_ratio(_EXACT.multiply(digits, Decimal(five)), 1, exp10 + five_exp2, FLOAT_PREC)
    return _round_ratio(digits, five, exp10 - five_exp2, FLOAT_PREC)


def _pow5(n: int, prec: int) -> tuple[int, int]:
    """Go's ``Float.pow5``: 5^n at ``prec`` bits by squaring a ``prec``+64-bit five, each
    product rounded as Go rounds it (not the correctly rounded 5^n)."""
    if n <= 27:
        return 5**n, 0
    value, exp2 = 5**27, 0
    n -= 27
    five, five_exp2 = 5, 0
    while n > 0:
        if n & 1:
            value, exp2 = round_bits(value * five, exp2 + five_exp2, prec)
        five, five_exp2 = round_bits(five * five, 2 * five_exp2, prec + 64)
        n >>= 1
    return value, exp2


def _log2(value: Decimal) -> float:
    """log2 of a positive integer held as Decimal, to about 1e-12 relative."""
    shift = value.adjusted() - 17
    lead = int(value.scaleb(-shift, _EXACT).to_integral_value(rounding=ROUND_DOWN, context=_EXACT))
    return math.log2(lead) + shift * math.log2(10)


def _round_ratio(numerator: Decimal, denominator: int, exp2: int, bits: int) -> tuple[int, int]:
    """numerator / denominator × 2^exp2 correctly rounded to ``bits`` bits (ties to even):
    the quotient is taken with a few bits to spare and the remainder as the sticky bit,
    as Go's ``uquo`` and ``umul`` do."""
    shift = bits + 3 - math.floor(_log2(numerator) - math.log2(denominator))
    for _ in range(4):
        top, bottom = numerator, Decimal(denominator)
        if shift >= 0:
            top = _EXACT.multiply(top, _EXACT.power(_TWO, shift))
        else:
            bottom = _EXACT.multiply(bottom, _EXACT.power(_TWO, -shift))
        quotient, remainder = _EXACT.divmod(top, bottom)
        whole = int(quotient)
        if whole.bit_length() >= bits + 2:
            return round_bits(whole, exp2 - shift, bits, sticky=not remainder.is_zero())
        shift += bits + 2 - whole.bit_length()
    raise ArithmeticError("could not bracket the quotient")  # the estimate is never this far off
