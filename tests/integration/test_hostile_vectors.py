"""The hostile-input vectors (tests/vectors/hostile/) through every reader of documents.

Each check vector goes through ``jovial-guard check`` as a subprocess (per file, so each
exit code is checked) and in-process; each webhook vector through the AdmissionHandler in
both modes. The expectations live beside the vectors in ``index.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.policy.check import check_documents, exit_code, read_documents
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import ManagedOpa
from tests.conftest import VECTORS

HOSTILE = VECTORS / "hostile"


def hostile_vectors(kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, {"why", "expect"}) of every vector of one set, from index.json."""
    index = json.loads((HOSTILE / "index.json").read_text())
    for name, entry in sorted(index[kind].items()):
        yield HOSTILE / kind / name, entry


CHECK_VECTORS = list(hostile_vectors("check"))
WEBHOOK_VECTORS = list(hostile_vectors("webhook"))


def assert_result(result: dict[str, Any], expect: dict[str, Any], where: str) -> None:
    outcome = expect["outcome"]
    if outcome == "not-applicable":
        assert result.get("applicable") is False and result["kind"] == expect["kind"], where
        assert result["allowed"] is True and "error" not in result, where
        return
    assert "applicable" not in result, where
    if outcome == "error":
        assert "error" in result and expect["contains"] in result["error"], (where, result.get("error"))
        assert result["allowed"] is False and result["patch"] == [], where
        assert result["reasons"][0]["rule"] == "malformed-input", where
        return
    assert "error" not in result, (where, result.get("error"))
    assert result["policy_revision"].startswith("sha256:"), where  # a real decision
    if outcome == "denied":
        assert result["allowed"] is False, where
        assert expect["rule"] in {r["rule"] for r in result["reasons"]}, (where, result["reasons"])


def assert_file(results: list[dict[str, Any]], path: Path, entry: dict[str, Any]) -> None:
    expected = entry["expect"]
    assert len(results) == len(expected), (path.name, [r.get("error") for r in results])
    for n, (result, expect) in enumerate(zip(results, expected)):
        assert_result(result, expect, f"{path.name} result {n} ({entry['why']})")


def expected_exit(entry: dict[str, Any], results: list[dict[str, Any]]) -> int:
    if any(e["outcome"] == "error" for e in entry["expect"]):
        return 2
    return 0 if all(r["allowed"] for r in results) else 1


def run_check(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "jovial_guard", "check", *args], input=stdin, capture_output=True,
                          timeout=120, env={**os.environ})


@pytest.mark.parametrize("path, entry", CHECK_VECTORS, ids=[p.name for p, _ in CHECK_VECTORS])
def test_check_subprocess(opa: ManagedOpa, path: Path, entry: dict[str, Any]) -> None:
    proc = run_check(str(path), "--opa-url", opa.url)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert_file(results, path, entry)
    assert proc.returncode == expected_exit(entry, results), proc.stderr.decode()
    errors = sum(1 for e in entry["expect"] if e["outcome"] == "error")
    assert len(proc.stderr.decode().splitlines()) == errors  # one line per malformed document


def test_check_subprocess_reads_the_whole_corpus_in_one_batch(opa: ManagedOpa) -> None:
    """All files at once: every malformed document stays an error of its own document."""
    proc = run_check(*(str(p) for p, _ in CHECK_VECTORS), "--opa-url", opa.url)
    assert proc.returncode == 2
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    for path, entry in CHECK_VECTORS:
        assert_file([r for r in results if r["file"] == str(path)], path, entry)


@pytest.mark.parametrize("name", ["list.yaml", "podlist.json", "multi-kind.yaml", "privileged-y.yaml"])
def test_check_stdin_reads_like_the_file(opa: ManagedOpa, name: str) -> None:
    """`kubectl get pods -o yaml | jovial-guard check -` (and -o json)."""
    path = HOSTILE / "check" / name
    entry = dict(CHECK_VECTORS)[path]
    proc = run_check("-", "--opa-url", opa.url, stdin=path.read_bytes())
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(r["file"] == "-" for r in results)
    assert_file(results, path, entry)
    assert proc.returncode == expected_exit(entry, results)


def test_list_item_patches_are_rooted_at_the_list(opa: ManagedOpa) -> None:
    import jsonpatch
    import yaml

    path = HOSTILE / "check" / "list.yaml"
    proc = run_check(str(path), "--opa-url", opa.url)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("item") for r in results] == [0, 1, 2]
    patched = jsonpatch.apply_patch(yaml.safe_load(path.read_text()), results[0]["patch"])
    assert patched["items"][0]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "securityContext" not in patched["items"][1].get("spec", {})


@pytest.mark.parametrize("path, entry", CHECK_VECTORS, ids=[p.name for p, _ in CHECK_VECTORS])
async def test_check_in_process(engine: PolicyEngine, path: Path, entry: dict[str, Any]) -> None:
    results = await check_documents(list(read_documents(str(path))), engine)
    as_json = [r.to_json() for r in results]
    assert_file(as_json, path, entry)
    assert exit_code(results) == expected_exit(entry, as_json)


@pytest.mark.parametrize("path, entry", WEBHOOK_VECTORS, ids=[p.name for p, _ in WEBHOOK_VECTORS])
@pytest.mark.parametrize("mode", ["mutate", "validate"])
async def test_webhook_handler(engine: PolicyEngine, path: Path, entry: dict[str, Any], mode: str) -> None:
    expect = entry["expect"]
    result = await AdmissionHandler(engine).handle(path.read_bytes(), mode=mode)  # type: ignore[arg-type]
    if expect["outcome"] == "400":
        assert result.status == 400 and result.outcome == "malformed"
        assert result.body["allowed"] is False and expect["contains"] in result.body["reason"], result.body
        return
    response = result.body["response"]
    assert result.status == 200 and response["allowed"] is False and "patch" not in response
    assert result.rule == expect["rule"] and expect["contains"] in response["status"]["message"], response


@pytest.mark.parametrize("name", ["deep.json", "huge-int.json", "lone-surrogate.json"])
async def test_webhook_and_check_refuse_alike(engine: PolicyEngine, name: str) -> None:
    """One parser, one set of bounds: the same bytes get the same refusal from both readers."""
    data = (HOSTILE / "webhook" / name).read_bytes()
    [doc] = list(read_documents(name, data=data))
    result = await AdmissionHandler(engine).handle(data, mode="mutate")
    assert doc.error is not None and doc.error in result.body["reason"]
