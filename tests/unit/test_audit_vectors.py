"""Audit-chain vectors (tests/vectors/audit/chains): a good log that must verify, tampered
copies that must fail naming the right record, and a byte-for-byte format fixture."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.audit.checkpoint import load_public_key
from jovial_guard.audit.verify import LogVerificationFailed, verify_log

CHAINS = Path(__file__).resolve().parents[1] / "vectors" / "audit" / "chains"
INDEX: dict[str, dict[str, Any]] = json.loads((CHAINS / "index.json").read_text())


@pytest.mark.parametrize("name", sorted(INDEX))
def test_chain_vector(name: str) -> None:
    expect = INDEX[name]
    directory = CHAINS / name
    key = load_public_key(CHAINS / "good" / "signing.pub")  # the trusted copy
    if expect["valid"]:
        report = verify_log(directory, key, workers=1)
        assert report.records == expect["records"] and report.unsigned_tail == 0
        return
    with pytest.raises(LogVerificationFailed) as info:
        verify_log(directory, key, workers=1)
    assert expect["reason"] in info.value.reason
    if "record" in expect:
        assert info.value.record == expect["record"]
    if "checkpoint" in expect:
        assert info.value.checkpoint == expect["checkpoint"]


def test_record_format_is_stable(tmp_path: Path) -> None:
    """Rebuilding the good log with today's code gives the stored bytes (format v1 frozen)."""
    spec = importlib.util.spec_from_file_location("chains_generate", CHAINS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.build_good(tmp_path)
    for name in ("audit-000001.log", "checkpoints.log", "signing.pub"):
        assert (tmp_path / name).read_bytes() == (CHAINS / "good" / name).read_bytes(), name
