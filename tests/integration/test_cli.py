"""The `jovial-guard check` / `policy lint|test` contracts, run as a user would run them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, free_loopback_port

from tests.conftest import FIXTURES

KEYS = {"file", "index", "allowed", "reasons", "patch", "policy_revision"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jovial_guard", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_check_allowed_file_exits_0_with_applicable_patches() -> None:
    path = FIXTURES / "pss" / "allowed.yaml"
    proc = run("check", str(path), "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    results = lines(proc)
    assert len(results) == 9
    docs = [d for d in __import__("yaml").safe_load_all(path.read_text()) if d]
    for result, doc in zip(results, docs):
        assert set(result) == KEYS
        assert result["allowed"] is True and result["reasons"] == []
        assert result["policy_revision"].startswith("sha256:")
        jsonpatch.apply_patch(doc, result["patch"])  # applies cleanly to the document


def test_check_denied_batch_exits_1_with_reasons() -> None:
    proc = run("check", str(FIXTURES / "pss" / "allowed.yaml"), str(FIXTURES / "pss" / "workloads.yaml"))
    assert proc.returncode == 1, proc.stderr
    results = lines(proc)
    denied = [r for r in results if not r["allowed"]]
    assert {r["reasons"][0]["rule"] for r in denied} == {"pod-security/privileged", "pod-security/host-path", "pod-security/host-namespaces"}
    assert all(r["patch"] == [] for r in denied)
    assert [r["index"] for r in results if r["file"].endswith("workloads.yaml")] == list(range(6))


def test_check_admission_review_patch_targets_the_review(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "nb", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "1", "operation": "CREATE", "object": pod, "userInfo": {"username": "u"}}}
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review))
    proc = run("check", str(path))
    assert proc.returncode == 0, proc.stderr
    [result] = lines(proc)
    patched = jsonpatch.apply_patch(review, result["patch"])
    assert patched["request"]["object"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_malformed_documents_exit_2_and_the_rest_is_decided(tmp_path: Path) -> None:
    bad = tmp_path / "mixed.yaml"
    bad.write_text(
        "kind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: c, image: 'quay.io/jupyter/x:1'}]}\n"
        "---\nkind: ConfigMap\ndata: {}\n"
        "---\njust a string\n"
        "---\nkind: Pod\nspec: {containers: [{name: c, image: 'quay.io/jupyter/x:1', securityContext: {privileged: true}}]}\n"
        "---\nkind: Pod\nspec: [unclosed\n"
    )
    notyaml = tmp_path / "broken.json"
    notyaml.write_text("{nope")
    proc = run("check", str(bad), str(notyaml), str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    results = lines(proc)
    by_key = {(Path(r["file"]).name, r["index"]): r for r in results}
    assert by_key[("mixed.yaml", 0)]["allowed"] is True
    not_applicable = by_key[("mixed.yaml", 1)]
    assert not_applicable["applicable"] is False and not_applicable["kind"] == "ConfigMap"
    assert not_applicable["allowed"] is True and "error" not in not_applicable
    assert "expected a Kubernetes object" in by_key[("mixed.yaml", 2)]["error"]
    assert by_key[("mixed.yaml", 3)]["reasons"][0]["rule"] == "pod-security/privileged"
    assert "invalid YAML" in by_key[("mixed.yaml", 4)]["error"]
    assert "not JSON" in by_key[("broken.json", 0)]["error"]
    assert "cannot read file" in by_key[("missing.yaml", 0)]["error"]
    assert all(r["allowed"] is False for r in results if "error" in r)
    assert "mixed.yaml: document 2" in proc.stderr and "mixed.yaml: document 1" not in proc.stderr


def test_check_with_dead_opa_denies_everything_and_exits_2() -> None:
    port = free_loopback_port()
    proc = run("check", str(FIXTURES / "pss" / "allowed.yaml"), "--opa-url", f"http://127.0.0.1:{port}", "--deadline", "1")
    assert proc.returncode == 2  # not decided, which is not "denied by policy" (1)
    assert proc.stderr.count("\n") == 1 and "could not be decided" in proc.stderr and "Traceback" not in proc.stderr
    results = lines(proc)
    assert results and all(not r["allowed"] and r["reasons"][0]["rule"] == "policy-engine-unavailable" for r in results)


def test_check_against_external_opa_and_table_format() -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        proc = run("check", str(FIXTURES / "pss" / "workloads.yaml"), "--format", "table", "--opa-url", opa.url)
    assert proc.returncode == 1
    assert "pod-security/host-path" in proc.stdout and "allowed" in proc.stdout


def test_check_without_opa_binary_exits_2(tmp_path: Path, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from jovial_guard.policy import check_cli, opa_process

    monkeypatch.setattr(opa_process, "REPO_ROOT", tmp_path)  # no .tools/bin/opa there
    monkeypatch.setenv("JOVIAL_GUARD_OPA", "")
    monkeypatch.setenv("JOVIAL_GUARD_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(check_cli.check, [str(FIXTURES / "pss" / "allowed.yaml")])
    assert result.exit_code == 2
    assert "install-opa" in result.output


def test_policy_lint_and_test_pass_on_the_repository() -> None:
    lint = run("policy", "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    test = run("policy", "test", "--min-coverage", "90")
    assert test.returncode == 0, test.stdout + test.stderr
    coverage = float(test.stdout.split("coverage: ")[1].split("%")[0])
    assert coverage >= 90.0


def test_policy_lint_and_test_fail_on_bad_rego(tmp_path: Path) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, broken)
    (broken / "pod_security" / "pod_security.rego").write_text(
        (broken / "pod_security" / "pod_security.rego").read_text().replace("violation contains", "violation contain", 1))
    lint = run("policy", "lint", "--policy-dir", str(broken))
    assert lint.returncode == 1
    assert "rego_parse_error" in lint.stdout + lint.stderr
    unformatted = tmp_path / "unformatted"
    shutil.copytree(DEFAULT_POLICY_DIR, unformatted)
    (unformatted / "main.rego").write_text((unformatted / "main.rego").read_text() + "\n\n\nextra   :=   1\n")
    assert run("policy", "lint", "--policy-dir", str(unformatted)).returncode == 1
    assert run("policy", "lint", "--policy-dir", str(unformatted), "--no-fmt-check").returncode == 0
    failing = tmp_path / "failing"
    shutil.copytree(DEFAULT_POLICY_DIR, failing)
    rego = failing / "pod_security" / "pod_security.rego"
    rego.write_text(rego.read_text().replace('"NET_BIND_SERVICE"}', '"NET_BIND_SERVICE", "SYS_ADMIN"}'))
    test = run("policy", "test", "--policy-dir", str(failing))
    assert test.returncode == 1
    assert "FAIL" in test.stdout
