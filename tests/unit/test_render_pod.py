"""render_pod_patch against golden vectors, and properties every patch must have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from jovial_guard.decision import SecuritySpec
from jovial_guard.hardening.render_pod import render_pod_patch, reroot_patch, scratch_volume_name

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "render_pod"


def _vectors() -> list[Any]:
    return [pytest.param(json.loads(p.read_text()), id=p.stem) for p in sorted(VECTORS.glob("*.json"))]


@pytest.mark.parametrize("vector", _vectors())
def test_golden(vector: dict[str, Any]) -> None:
    spec = SecuritySpec.from_json(vector["spec"])
    assert render_pod_patch(vector["pod"], spec) == vector["patch"]


@pytest.mark.parametrize("vector", _vectors())
def test_patch_applies_and_is_idempotent(vector: dict[str, Any]) -> None:
    spec = SecuritySpec.from_json(vector["spec"])
    patched = jsonpatch.apply_patch(vector["pod"], render_pod_patch(vector["pod"], spec))
    assert render_pod_patch(patched, spec) == []


def test_deterministic() -> None:
    vector = json.loads((VECTORS / "init_and_ephemeral.json").read_text())
    spec = SecuritySpec.from_json(vector["spec"])
    assert render_pod_patch(vector["pod"], spec) == render_pod_patch(json.loads(json.dumps(vector["pod"])), spec)


def test_ephemeral_containers_get_no_resources_or_read_only_root() -> None:
    vector = json.loads((VECTORS / "init_and_ephemeral.json").read_text())
    ops = render_pod_patch(vector["pod"], SecuritySpec.from_json(vector["spec"]))
    ephemeral = [op for op in ops if op["path"].startswith("/spec/ephemeralContainers/")]
    assert ephemeral == [{"op": "add", "path": "/spec/ephemeralContainers/0/securityContext",
                          "value": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]


def test_reroot_for_workload_kinds() -> None:
    ops = [{"op": "add", "path": "/spec/securityContext", "value": {}}]
    assert reroot_patch(ops, "") == ops
    assert reroot_patch(ops, "/spec/template")[0]["path"] == "/spec/template/spec/securityContext"
    assert reroot_patch(ops, "/spec/jobTemplate/spec/template")[0]["path"] == "/spec/jobTemplate/spec/template/spec/securityContext"


def test_scratch_volume_names_are_valid() -> None:
    assert scratch_volume_name("/home/jovyan") == "jg-scratch-home-jovyan"
    assert scratch_volume_name("/") == "jg-scratch-root"
    assert len(scratch_volume_name("/" + "x" * 200)) <= 63


def test_pod_without_spec_is_refused() -> None:
    vector = json.loads((VECTORS / "bare_notebook.json").read_text())
    with pytest.raises(ValueError):
        render_pod_patch({"metadata": {}}, SecuritySpec.from_json(vector["spec"]))
