"""What the tests of the compiled policy share: the corpus generator (the real opa's
decisions), the compiled default policy, a connection with chosen settings, and the
canonical form two decisions are compared in."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.policy.client import encode_input
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR
from jovial_guard.policy.wasm_bundle import PolicyArtifact, compile_wasm
from jovial_guard.policy.wasm_engine import WasmConnection

GENERATOR = Path(__file__).resolve().parents[1] / "vectors" / "decisions" / "generate.py"
_spec = importlib.util.spec_from_file_location("decisions_generate", GENERATOR)
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

DECISION = ("jovial_guard.main", "decision")
IMAGE = "quay.io/jupyter/base-notebook:2024-05-27"


@cache
def _compiled() -> tuple[bytes, bytes]:
    return compile_wasm(DEFAULT_POLICY_DIR)


def compiled_policy() -> tuple[bytes, dict[str, Any]]:
    """``opa build -t wasm`` of the policy directory (once per run): module and data."""
    wasm, data = _compiled()
    return wasm, json.loads(data)


def connection(compiled: tuple[bytes, dict[str, Any]], *, settings: Any = None, deadline: float = 5.0) -> WasmConnection:
    wasm, data = compiled
    if settings is not None:
        data = {**data, "settings": settings}
    return WasmConnection.from_artifact(PolicyArtifact(wasm, json.dumps(data).encode(), "test"), deadline=deadline)


def canonical(value: Any) -> bytes:
    return encode_input({"d": value})


def wasm_decisions(conn: WasmConnection, inputs: list[dict[str, Any]]) -> list[Any]:
    """Each input's decision by the compiled policy; None where the engine failed."""
    out = []
    for doc in inputs:
        try:
            out.append(conn.decide_encoded(*DECISION, encode_input(doc)))
        except PolicyEngineUnavailable:
            out.append(None)
    return out


def pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A notebook pod of the hub's user ``x`` with one container (more through ``spec``)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "jupyter-x", "labels": {"component": "singleuser-server"},
                         "annotations": {"hub.jupyter.org/username": "x"}},
            "spec": {"containers": [container], **spec}}
