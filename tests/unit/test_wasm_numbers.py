"""Hostile numbers and built-in arguments, decided by the real opa and by the compiled policy.

Resource amounts are where the compiled policy asks its host for arbitrary-precision
arithmetic (``units.parse``: big.Rat; ``units.parse_bytes``: big.Float), and where OPA's
answers become numbers of up to millions of digits (``"1e999999"``). Each amount below, in
every place a pod can state it, must get the decision the real opa gives: allowed, rules,
messages, patch (accelerator counts of 10^18 or more are malformed to the policy: OPA's Go
evaluator and its Wasm library would disagree on ``to_number`` and ``floor`` of them, and
Go's refusal would drop them from the total). Beyond :data:`MAX_DIGITS` the host refuses to compute: the evaluation
fails closed, as the OPA server's does, which cannot decide such an amount within the
deadline either.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.constants import GROUPS_ANNOTATION
from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa
from jovial_guard.policy.wasm_bignum import MAX_DIGITS
from tests.unit.wasm_support import IMAGE, canonical, compiled_policy, connection, generate, pod, wasm_decisions

#: Amounts as a pod may state them: huge and tiny exponents, forms Go's parsers take or
#: refuse, counts beyond float64, JSON numbers.
AMOUNTS: list[Any] = [
    "1e9999", "1E+400", "0.000000001", "1Ei", "9e18", "-1", "1e-9999", "+1", ".5", "5.", "0x10", "1_000", "NaN",
    "Infinity", "-Infinity", "1e1000000", "1e+9999m", "-0", "1e-11", "-1e-11", "1..5", "1e5e5", "١", "9" * 308,
    "9" * 309, 1e300, 2.0, -1, 123456789012345678, 0.5, 1e-300,
]
#: Amounts OPA itself needs up to a second for: stated in two places only.
EXTREME: list[str] = ["1e999999", "1e-999999", "1.55e-999999", "9" * 100_000, "0." + "0" * 999_998 + "1",
                      "1e+" * 1_000_000]
RESOURCES = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu")


@pytest.fixture(scope="module")
def compiled() -> tuple[bytes, dict[str, Any]]:
    return compiled_policy()


def _amount_pod(resource: str, section: str, amount: Any, *, init: bool) -> dict[str, Any]:
    stated = {"name": "c", "image": IMAGE, "resources": {section: {resource: amount}}}
    if init:
        return pod({"name": "main", "image": IMAGE}, initContainers=[stated])
    return pod(stated)


def _both(compiled: tuple[bytes, dict[str, Any]], cases: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, Any, Any]]:
    """(name, the real opa's decision, the compiled policy's) of each (name, settings, pod)."""
    inputs = [workload_from_object(p).to_input() for _, _, p in cases]
    by_opa = generate.decide([{"name": n, "settings": s, "input": i} for (n, s, _), i in zip(cases, inputs, strict=True)])
    conns = {"default": connection(compiled), "variant": connection(compiled, settings=generate.variant_settings())}
    ours = [wasm_decisions(conns[s], [i])[0] for (_, s, _), i in zip(cases, inputs, strict=True)]
    return [(n, by_opa.get(k), ours[k]) for k, (n, _, _) in enumerate(cases)]


def test_hostile_amounts_are_decided_as_by_opa(compiled: tuple[bytes, dict[str, Any]]) -> None:
    cases = [(f"{resource} {section} {str(amount)[:12]} init={init} {settings}", settings,
              _amount_pod(resource, section, amount, init=init))
             for amount in AMOUNTS for resource in RESOURCES for section in ("limits", "requests")
             for init in (False, True) for settings in ("default", "variant")]
    differing = []
    for name, theirs, ours in _both(compiled, cases):
        assert theirs is not None and ours is not None, name
        if canonical(ours) != canonical(theirs):
            differing.append(name)
    assert not differing, f"{len(differing)} of {len(cases)} differ, first {differing[:5]}"
    assert len(cases) == len(AMOUNTS) * len(RESOURCES) * 8


def test_extreme_amounts_are_decided_as_by_opa_within_the_deadline(compiled: tuple[bytes, dict[str, Any]]) -> None:
    cases = [(f"{resource} {amount[:12]} ({len(amount)} chars)", "default", _amount_pod(resource, section, amount, init=False))
             for amount in EXTREME for resource, section in (("cpu", "limits"), ("memory", "requests"))]
    for name, theirs, ours in _both(compiled, cases):
        assert canonical(ours) == canonical(theirs), name
    engine, slowest = PolicyEngine(connection(compiled, deadline=2.0)), 0.0
    for _, _, p in cases:
        workload = workload_from_object(p)
        started = time.perf_counter()
        decision = asyncio.run(engine.decide(workload))
        slowest = max(slowest, time.perf_counter() - started)
        assert all(r.rule != ENGINE_UNAVAILABLE for r in decision.reasons)
    assert slowest < 2.0


def test_an_amount_beyond_the_digit_bound_fails_closed(compiled: tuple[bytes, dict[str, Any]]) -> None:
    """Beyond :data:`MAX_DIGITS` the host refuses at once and the workload is denied (Go reads
    an amount's digits in quadratic time: the real opa takes seconds for a million of them,
    beyond the engine's deadline, so the OPA server's answer would be a denial too)."""
    amount = "9" * (MAX_DIGITS + 1)
    workload = workload_from_object(_amount_pod("cpu", "limits", amount, init=False))
    started = time.perf_counter()
    decision = asyncio.run(PolicyEngine(connection(compiled, deadline=2.0)).decide(workload))
    assert time.perf_counter() - started < 1.5
    assert not decision.allowed and decision.reasons[0].rule == ENGINE_UNAVAILABLE
    assert "TooManyDigits" in decision.reasons[0].message


def _with_settings(compiled: tuple[bytes, dict[str, Any]], settings: dict[str, Any], pods: list[dict[str, Any]],
                   tmp_path: Path) -> list[tuple[Any, Any]]:
    """(the real opa's decision, the compiled policy's) of each pod under ``settings``."""
    inputs = [workload_from_object(p).to_input() for p in pods]
    document = tmp_path / "cases.json"
    document.write_text(json.dumps({"settings": settings, "inputs": inputs}))
    query = ("{i: d | some i, x in input.inputs; s := input.settings; "
             "d := data.jovial_guard.main.decision with input as x with data.settings as s}")
    proc = subprocess.run([find_opa(), "eval", "--format", "json", "-d", str(DEFAULT_POLICY_DIR), "-i", str(document), query],
                          capture_output=True, text=True, check=True, timeout=120)
    answers = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    ours = wasm_decisions(connection(compiled, settings=settings), inputs)
    return [(answers.get(str(k)), ours[k]) for k in range(len(inputs))]


def _default_settings() -> dict[str, Any]:
    settings: dict[str, Any] = json.loads((DEFAULT_POLICY_DIR / "data.json").read_text())["settings"]
    return settings


def _user_in(group: str, container: dict[str, Any]) -> dict[str, Any]:
    """A spawn-hook workload of user x in ``group`` (the groups the hub vouches for)."""
    p = pod(container)
    p["metadata"]["annotations"][GROUPS_ANNOTATION] = json.dumps([group])
    return p


#: (resource, group maximum, amount asked for): numbers of thousands of digits in the
#: messages (sprintf gets them as big integers).
LIMITS = [("cpu", "1e9999", "1e10000"), ("cpu", "1e9999Ki", "2e10002"), ("cpu", "9" * 5000, "1e5000"),
          ("cpu", "0.5e-9999", "1"), ("memory", "0.5e-9999", "1"), ("memory", "1e20", "2e20"),
          ("memory", "9" * 5000, "1e5000")]
#: Group maxima of memory the two evaluators of OPA write differently: from about 1e27
#: bytes the message's GiB figure (a division in the policy) is a float in one and an
#: integer in the other, and from about 1e9500 bytes OPA's Wasm library aborts (the
#: compiled engine then fails closed).
KNOWN_LIMITS = [("memory", "1e30", "2e30"), ("memory", "1e4000", "2e4000"), ("memory", "1e9999", "2e9999")]


def test_limits_too_large_to_write_out_are_printed_as_by_opa(compiled: tuple[bytes, dict[str, Any]], tmp_path: Path) -> None:
    settings = _default_settings()
    pods = []
    for k, (resource, maximum, asked) in enumerate(LIMITS + KNOWN_LIMITS):
        settings["resources"]["group_max"][f"g{k}"] = {"cpu": "1", "memory": "1", "gpu": 0, resource: maximum}
        pods.append(_user_in(f"g{k}", {"name": "c", "image": IMAGE, "resources": {"limits": {resource: asked}}}))
    outcomes = _with_settings(compiled, settings, pods, tmp_path)
    for (resource, maximum, _), (theirs, ours) in zip(LIMITS, outcomes, strict=False):
        assert theirs is not None and canonical(ours) == canonical(theirs), (resource, maximum[:20])
    assert any(len(r["message"]) > 5000 for _, ours in outcomes[:len(LIMITS)] for r in ours["reasons"])
    *differing, (theirs, aborted) = outcomes[len(LIMITS):]
    for theirs, ours in differing:
        assert canonical(ours) != canonical(theirs) and ours["allowed"] is theirs["allowed"] is False
        assert [r["message"].split(" GiB")[0].rsplit("(", 1)[0] for r in ours["reasons"]] == \
            [r["message"].split(" GiB")[0].rsplit("(", 1)[0] for r in theirs["reasons"]]
    assert aborted is None and theirs["allowed"] is False


#: Exemption expiry times: int64 nanoseconds end in 2262 (a "never" of 9999 is not live to
#: OPA), dates that do not exist, fractions longer than nanoseconds.
EXPIRES = ["9999-12-31T23:59:59Z", "2262-04-11T23:47:16Z", "2262-04-11T23:47:17Z", "2262-04-11T23:47:16.854775807Z",
           "2262-04-11T23:47:16.854775808Z", "2100-02-29T00:00:00Z", "2096-02-29T00:00:00Z",
           "2100-01-01T00:00:00." + "9" * 10_000 + "Z", "2100-01-01T00:00:00+23:59", "2100-01-01T24:00:00Z",
           "0000-01-01T00:00:00Z", "2100-13-01T00:00:00Z"]


def test_exemption_expiry_times_are_decided_as_by_opa(compiled: tuple[bytes, dict[str, Any]], tmp_path: Path) -> None:
    settings = _default_settings()
    settings["exemptions"] = [{"id": f"e{k}", "rules": ["pod-security/privileged"], "reason": "r", "expires": expires,
                               "selector": {"case": f"e{k}"}} for k, expires in enumerate(EXPIRES)]
    pods = []
    for k in range(len(EXPIRES)):
        p = pod({"name": "c", "image": IMAGE, "securityContext": {"privileged": True}})
        p["metadata"]["labels"]["case"] = f"e{k}"
        pods.append(p)
    outcomes = _with_settings(compiled, settings, pods, tmp_path)
    for expires, (theirs, ours) in zip(EXPIRES, outcomes, strict=True):
        assert theirs is not None and canonical(ours) == canonical(theirs), expires[:40]
    assert {theirs["allowed"] for theirs, _ in outcomes} == {True, False}  # some live, some not
