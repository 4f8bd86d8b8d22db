"""Kubernetes resource quantities ("500m", "2Gi", "1.5") as exact numbers.

Renderers need numbers (Docker wants bytes and nano-CPUs; the pod renderer compares a
stated request with the profile's limit). Decimal keeps "0.1" exact.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
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

_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity; raise ValueError naming the value when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r} (examples: 500m, 2, 4Gi)")
    number, exponent, suffix = match.groups()
    try:
        result = Decimal(number + (exponent or ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    return result * _SUFFIXES[suffix or ""]


def to_bytes(value: str | int | float) -> int:
    """Memory quantity in whole bytes (rounded up)."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def to_nano_cpus(value: str | int | float) -> int:
    """CPU quantity as Docker's NanoCpus."""
    return int(parse_quantity(value) * Decimal(10) ** 9)
