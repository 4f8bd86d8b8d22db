"""Each class of admission problem, through both entry points that see AdmissionReviews:
``jovial-guard check`` (as a user runs it) and the webhook handler (real OPA either way).

The cases are data: tests/vectors/policy-classes/cases.yaml (written by generate.py beside
it), each object annotated with the outcome it must get: "allowed" or the rule that denies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.policy.engine import PolicyEngine

from tests.conftest import VECTORS

CASES_FILE = VECTORS / "policy-classes" / "cases.yaml"
CASES: list[dict[str, Any]] = [d for d in yaml.safe_load_all(CASES_FILE.read_text()) if d]


def expected(review: dict[str, Any]) -> str:
    return str(review["request"]["object"]["metadata"]["annotations"]["test.jovial-guard.io/expect"])


def outcome(allowed: bool, rules: set[str]) -> str:
    return "allowed" if allowed else ",".join(sorted(rules))


def test_every_case_through_check() -> None:
    proc = subprocess.run([sys.executable, "-m", "jovial_guard", "check", str(CASES_FILE), "--format", "jsonl"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 1, proc.stderr  # some are denied
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(results) == len(CASES)
    got = [outcome(r["allowed"], {x["rule"] for x in r["reasons"]}) for r in results]
    assert got == [expected(c) for c in CASES]


@pytest.mark.parametrize("review", CASES, ids=lambda c: f"{c['request']['object']['metadata']['name']}:{expected(c)}")
async def test_every_case_through_the_webhook(engine: PolicyEngine, review: dict[str, Any]) -> None:
    handler = AdmissionHandler(engine)
    result = await handler.handle(json.dumps(review).encode(), mode="mutate")
    response = result.body["response"]
    message = response.get("status", {}).get("message", "")
    rules = {part.split("]")[0] for part in message.split("[")[1:]}
    assert outcome(response["allowed"], rules) == expected(review), message
