"""The policy decides the whole recorded corpus exactly as when it was recorded.

tests/vectors/decisions/corpus.jsonl.gz holds every workload the tests and benchmarks give
OPA (conformance pods, hostile documents, z2jh's and KubeSpawner's pods, the benchmarks'
pods, spawns, UPDATEs), each with its recorded decision under policies/data.json and under
settings that turn on exemptions and enforcement modes. A change to the Rego that is meant
to keep behaviour (a speed-up, a refactoring) must give every case the identical decision:
allowed, every reason and warning in order, exemptions, mode and the whole spec. The batch
entry point must answer the same as the single one. Both are asked of the real opa.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa

GENERATOR = Path(__file__).resolve().parents[1] / "vectors" / "decisions" / "generate.py"
_spec = importlib.util.spec_from_file_location("decisions_generate", GENERATOR)
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)
CORPUS, decide, variant_settings = generate.CORPUS, generate.decide, generate.variant_settings

BATCH_QUERY = "data.jovial_guard.batch.decisions"


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(CORPUS.read_bytes()).splitlines() if line]


def test_corpus_covers_allowed_denied_and_variants() -> None:
    cases = _corpus()
    decisions = [c["decision"] for c in cases]
    assert len(cases) > 900
    assert any(d and d["allowed"] for d in decisions) and any(d and not d["allowed"] for d in decisions)
    assert any(d and d["exemptions"] for d in decisions)
    assert {d["mode"] for d in decisions if d} >= {"enforce", "warn", "audit", "none"}


def test_every_recorded_decision_is_reproduced() -> None:
    cases = _corpus()
    decided = decide([{k: c[k] for k in ("name", "settings", "input")} for c in cases])
    differing = [(c["name"], c["settings"]) for i, c in enumerate(cases) if decided.get(i) != c["decision"]]
    if differing:
        i = next(i for i, c in enumerate(cases) if decided.get(i) != c["decision"])
        detail = json.dumps({"recorded": cases[i]["decision"], "now": decided.get(i)}, indent=1, sort_keys=True)
        pytest.fail(f"{len(differing)} of {len(cases)} decisions differ, first {differing[:5]}:\n{detail[:4000]}")


def test_batch_entry_point_answers_like_the_single_one(tmp_path: Path) -> None:
    cases = [c for c in _corpus() if c["settings"] == "default"]
    batch_input = tmp_path / "batch.json"
    batch_input.write_text(json.dumps({"batch": [c["input"] for c in cases]}))
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-d", str(DEFAULT_POLICY_DIR), "-i", str(batch_input),
                           BATCH_QUERY], capture_output=True, text=True, check=True)
    answers = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert len(answers) == len(cases)
    assert all(answers[str(i)] == c["decision"] for i, c in enumerate(cases))


def test_variant_settings_are_valid_policy_data() -> None:
    settings = variant_settings()
    assert settings["exemptions"] and settings["enforcement"]["modes"]
