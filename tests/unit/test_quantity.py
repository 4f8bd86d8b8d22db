from decimal import Decimal

import pytest

from jovial_guard.hardening.quantity import parse_quantity, to_bytes, to_nano_cpus


@pytest.mark.parametrize(("text", "value"), [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1.5", Decimal("1.5")),
                                             ("4Gi", Decimal(4 * 2**30)), ("1k", Decimal(1000)), ("1e3", Decimal(1000)), (2, Decimal(2))])
def test_parse(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_conversions() -> None:
    assert to_bytes("2Gi") == 2 * 2**30
    assert to_nano_cpus("250m") == 250_000_000


@pytest.mark.parametrize("bad", ["", "lots", "1Gb", "-1", "1..2", True])
def test_bad(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)  # type: ignore[arg-type]
