"""Kubernetes resource quantities ("500m", "2Gi", "1.5", "1e3") as exact numbers.

The one parser for quantities in the project: the pod renderer compares a stated request
with the profile's limit, and the Docker renderer turns limits into bytes and nano-CPUs.
Decimal keeps "0.1" exact.

The grammar is Kubernetes' own (``k8s.io/apimachinery/pkg/api/resource``)::

    quantity        ::= signedNumber suffix
    signedNumber    ::= number | sign number
    number          ::= digits | digits "." digits | digits "." | "." digits
    sign            ::= "+" | "-"
    suffix          ::= binarySI | decimalExponent | decimalSI
    binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI       ::= n | u | m | "" | k | M | G | T | P | E
    decimalExponent ::= ("e" | "E") sign? digits

with one restriction: resources are never negative, so a leading "-" is refused (as the
API server's validation refuses it). No surrounding spaces, one suffix at most.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)"
)


class Quantity(NamedTuple):
    """A parsed quantity: its exact ``value`` and the ``suffix`` it was written with
    (``""`` for none, ``"e3"``-style text for a decimal exponent)."""

    value: Decimal
    suffix: str


def parse(value: str | int | float) -> Quantity:
    """Parse ``value`` by the grammar above; raise ValueError naming it when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a resource quantity cannot be negative: {value!r}")
        return Quantity(Decimal(str(value)), "")
    if not isinstance(value, str):
        raise ValueError(f"not a Kubernetes quantity: {value!r} (examples: 500m, 2, 4Gi)")
    match = _QUANTITY.fullmatch(value)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r} (examples: 500m, 2, 4Gi)")
    if match["sign"] == "-" and Decimal(match["number"]) != 0:
        raise ValueError(f"a resource quantity cannot be negative: {value!r}")
    number = Decimal(match["number"])
    if match["exponent"]:
        exponent = int(match["exponent"][1:])
        if abs(exponent) > 30:
            raise ValueError(f"quantity {value!r} is out of range (exponent beyond e30)")
        return Quantity(number.scaleb(exponent), match["exponent"].lower())
    suffix = match["suffix"] or ""
    return Quantity(number * _SUFFIXES[suffix], suffix)


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a quantity; raise ValueError naming the value when it is not one."""
    return parse(value).value


def to_bytes(value: str | int | float) -> int:
    """Memory quantity in whole bytes (rounded up)."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def to_nano_cpus(value: str | int | float) -> int:
    """CPU quantity as Docker's NanoCpus (rounded down to a whole nano-CPU)."""
    return int(parse_quantity(value) * Decimal(10) ** 9)
