"""The quantity grammar: Kubernetes' own, non-negative, checked against the Kubernetes client.

The Kubernetes Python client's ``parse_quantity`` agrees on every well-formed quantity but
is laxer (it hands the number to ``Decimal``, which also takes "NaN", "1_000" and spaces),
which is why the project keeps its own strict parser.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as kubernetes_parse_quantity

from jovial_guard.hardening.quantity import Quantity, parse, parse_quantity, to_bytes, to_nano_cpus


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1.5", Decimal("1.5")), ("4Gi", Decimal(4 * 2**30)),
    ("1k", Decimal(1000)), ("1e3", Decimal(1000)), ("1E3", Decimal(1000)), ("2E", Decimal(2 * 10**18)),
    ("1.", Decimal(1)), (".5", Decimal("0.5")), ("+3", Decimal(3)), ("-0", Decimal(0)),
    ("100n", Decimal("1e-7")), ("5u", Decimal("5e-6")), ("25e-3", Decimal("0.025")), ("1e+2", Decimal(100)),
    (2, Decimal(2)), (0.25, Decimal("0.25")),
])
def test_parse(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_suffix_is_reported() -> None:
    assert parse("500m") == Quantity(Decimal("0.5"), "m")
    assert parse("1E3").suffix == "e3"
    assert parse("7").suffix == ""


def test_conversions() -> None:
    assert to_bytes("2Gi") == 2 * 2**30
    assert to_bytes("1500m") == 2  # rounded up
    assert to_nano_cpus("250m") == 250_000_000


@pytest.mark.parametrize("bad", [
    "", "lots", "1Gb", "-1", "-1Gi", "1..2", ".", "+", "e3", "1e", "1e3Ki", "1Ki3", "1ki", "1KiB", " 1", "1 ",
    "NaN", "Infinity", "1_000", "0x10", "1e1.5", "1e400", "½", True, None, [1], -1, -0.5,
])
def test_bad(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)  # type: ignore[arg-type]


_SUFFIX = st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
_NUMBER = st.one_of(
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}\.[0-9]{0,6}", fullmatch=True),
    st.from_regex(r"\.[0-9]{1,6}", fullmatch=True),
)


@given(number=_NUMBER, suffix=_SUFFIX)
def test_agrees_with_the_kubernetes_client(number: str, suffix: str) -> None:
    text = number + suffix
    assert parse_quantity(text) == kubernetes_parse_quantity(text)


@given(number=_NUMBER, exponent=st.integers(min_value=-9, max_value=18))
def test_decimal_exponent(number: str, exponent: int) -> None:
    assert parse_quantity(f"{number}e{exponent}") == Decimal(number).scaleb(exponent)
