"""Decision parsing: anything but a well-formed OPA answer is refused, never an allow."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import Decision, SecuritySpec
from jovial_guard.errors import MalformedDecision

SPEC = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "render_pod" / "bare_notebook.json").read_text())["spec"]


def allow(**overrides: Any) -> dict[str, Any]:
    return {"allowed": True, "reasons": [], "warnings": [], "spec": copy.deepcopy(SPEC), "revision": "sha256:1", **overrides}


def test_allow_parses() -> None:
    decision = Decision.from_opa(allow())
    assert decision.allowed and decision.spec is not None
    assert decision.spec.uid == 1000 and decision.spec.capabilities_drop == ("ALL",)
    assert decision.policy_revision == "sha256:1"


def test_deny_parses_sorted_reasons() -> None:
    decision = Decision.from_opa({"allowed": False, "reasons": [{"rule": "b", "message": "2"}, {"rule": "a", "message": "1"}], "spec": None})
    assert [r.rule for r in decision.reasons] == ["a", "b"]
    assert decision.message() == "[a] 1 [b] 2"


def test_deny_without_reasons_still_explains() -> None:
    assert Decision.from_opa({"allowed": False}).reasons[0].rule == "denied"


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "allow",
        {},
        {"allowed": "true", "spec": SPEC},
        {"allowed": 1, "spec": SPEC},
        allow(spec=None),
        allow(spec={}),
        allow(reasons="none"),
        allow(reasons=[{"rule": "x"}]),
        allow(reasons=[{"rule": "x", "message": "y"}]),
    ],
)
def test_malformed_decisions_are_refused(doc: Any) -> None:
    with pytest.raises(MalformedDecision):
        Decision.from_opa(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("uid",), "1000"),
        (("uid",), True),
        (("uid",), 1.5),
        (("seccomp", "type"), "Unconfined"),
        (("apparmor",), {"type": "Localhost"}),
        (("capabilities",), {"drop": ["ALL"]}),
        (("egress", "allow"), [{"ports": [1]}]),
        (("resources",), {}),
    ],
)
def test_malformed_specs_are_refused(path: tuple[str, ...], value: Any) -> None:
    spec = copy.deepcopy(SPEC)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(MalformedDecision):
        SecuritySpec.from_json(spec)


def test_python_only_invents_denials() -> None:
    decision = Decision.deny("policy-engine-unavailable", "down")
    assert decision.allowed is False and decision.spec is None
