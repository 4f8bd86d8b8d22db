"""Golden tests for render_docker: SecuritySpec in, DockerSpawner settings out.

The vectors under tests/vectors/render_docker/ are data: ``pass-*`` hold a spec, the render
arguments and the exact expected dict (written by hand); ``fail-*`` hold a spec that must be
refused and a fragment of the refusal message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import SecuritySpec
from jovial_guard.hardening.render_docker import (
    UnrenderableSpec,
    parse_cpu,
    parse_memory,
    render_docker,
)
from jovial_guard.hardening.userns import IdMap

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "render_docker"


def _args(vector: dict[str, Any]) -> dict[str, Any]:
    """The vector's render arguments; ``userns`` is written as the IdMap's fields."""
    args = dict(vector["args"])
    if args.get("userns") is not None:
        args["userns"] = IdMap(**args["userns"])
    return args


def _vectors(prefix: str) -> list[Any]:
    files = sorted(VECTORS.glob(f"{prefix}-*.json"))
    return [pytest.param(json.loads(f.read_text()), id=f.stem) for f in files]


def test_vectors_exist() -> None:
    assert len(_vectors("pass")) >= 3
    assert len(_vectors("fail")) >= 10


@pytest.mark.parametrize("vector", _vectors("pass"))
def test_golden(vector: dict[str, Any]) -> None:
    spec = SecuritySpec.from_json(vector["spec"])
    assert render_docker(spec, **_args(vector)) == vector["expected"]


@pytest.mark.parametrize("vector", _vectors("pass"))
def test_deterministic(vector: dict[str, Any]) -> None:
    spec = SecuritySpec.from_json(vector["spec"])
    first = json.dumps(render_docker(spec, **_args(vector)), sort_keys=False)
    again = json.dumps(render_docker(SecuritySpec.from_json(vector["spec"]), **_args(vector)))
    assert first == again


@pytest.mark.parametrize("vector", _vectors("fail"))
def test_refused(vector: dict[str, Any]) -> None:
    spec = SecuritySpec.from_json(vector["spec"])
    with pytest.raises(UnrenderableSpec, match=vector["error"]):
        render_docker(spec, **_args(vector))


def test_apparmor_never_faked() -> None:
    vector = json.loads((VECTORS / "pass-default-no-apparmor.json").read_text())
    out = render_docker(SecuritySpec.from_json(vector["spec"]), **_args(vector))
    assert not any(opt.startswith("apparmor") for opt in out["host_config"]["security_opt"])
    assert out["hardening"]["apparmor"]["status"] == "unsupported"


def test_arguments_are_keyword_only() -> None:
    vector = json.loads((VECTORS / "pass-default-no-apparmor.json").read_text())
    spec = SecuritySpec.from_json(vector["spec"])
    with pytest.raises(TypeError):
        render_docker(spec, "/x.json", False, "none", "vol")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("2Gi", 2 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1.5Gi", 3 * 2**29), ("67108864", 2**26)],
)
def test_parse_memory(quantity: str, expected: int) -> None:
    assert parse_memory(quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [("1", 10**9), ("500m", 5 * 10**8), ("1.5", 15 * 10**8)])
def test_parse_cpu(quantity: str, expected: int) -> None:
    assert parse_cpu(quantity) == expected


@pytest.mark.parametrize("quantity", ["", "-1Gi", "1 Gi", "1e3", "Gi", "1KB", "1k"])
def test_parse_memory_rejects(quantity: str) -> None:
    with pytest.raises(UnrenderableSpec):
        parse_memory(quantity)


def test_an_id_outside_the_user_namespace_is_refused() -> None:
    vector = json.loads((VECTORS / "pass-default-userns.json").read_text())
    vector["spec"]["uid"] = 70000
    with pytest.raises(UnrenderableSpec, match="outside the user's user-namespace mapping"):
        render_docker(SecuritySpec.from_json(vector["spec"]), **_args(vector))
