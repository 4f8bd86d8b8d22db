"""`jovial-guard audit-cluster` on a real kube-apiserver with the real OPA.

A notebook pod is stored while the policy admits its image; a stricter revision (the
image's registry dropped from the allowlist) then reports it as a violation in a wg-policy
PolicyReport, in enforce mode in its namespace and in warn mode in a namespace labelled
``jovial-guard.io/mode: warn``. A later pass with the original revision turns it back
to ``pass``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa
from tests.admission.kubespawner_pods import as_api_server_sends, kubespawner_pod

from .kube_cluster import LocalKubeCluster, require_kube_apiserver

pytestmark = pytest.mark.integration

APISERVER, ETCD = require_kube_apiserver()

from kubernetes import client, config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "deploy" / "helm" / "jovial-guard" / "crds" / "wgpolicyk8s.io_policyreports.yaml"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKubeCluster]:
    with LocalKubeCluster(apiserver=APISERVER, etcd=ETCD) as running:  # type: ignore[arg-type]
        yield running


@pytest.fixture(scope="module")
def api(cluster: LocalKubeCluster) -> client.ApiClient:
    api_client = config.new_client_from_config(str(cluster.kubeconfig))
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(yaml.safe_load(CRD.read_text()))
    core = client.CoreV1Api(api_client)
    for name, labels in (("jhub", {}), ("staging", {"jovial-guard.io/mode": "warn"})):
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    deadline = time.monotonic() + 30
    while True:  # the CRD must be established before reports can be written
        crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition("policyreports.wgpolicyk8s.io")
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return api_client
        assert time.monotonic() < deadline, "PolicyReport CRD not established"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stricter_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policies with quay.io/jupyter/ removed from the image allowlist."""
    root = tmp_path_factory.mktemp("stricter") / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, root)
    data = json.loads((root / "data.json").read_text())
    images = data["settings"]["images"]
    images["allowed_prefixes"] = [p for p in images["allowed_prefixes"] if p != "quay.io/jupyter/"]
    (root / "data.json").write_text(json.dumps(data))
    return root


def audit(cluster: LocalKubeCluster, opa_url: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "jovial_guard", "audit-cluster", "--opa-url", opa_url, "--kubeconfig", str(cluster.kubeconfig),
         "--output", "json", "--log-level", "INFO"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def report(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    return dict(custom.get_namespaced_custom_object("wgpolicyk8s.io", "v1alpha2", namespace, "policyreports", "jovial-guard"))


async def test_pod_created_before_a_stricter_revision_is_reported(api: client.ApiClient, cluster: LocalKubeCluster,
                                                                    stricter_policies: Path) -> None:
    core = client.CoreV1Api(api)
    for ns in ("jhub", "staging"):
        pod = as_api_server_sends(await kubespawner_pod(username="ann"))
        core.create_namespaced_pod(ns, pod)

    with ManagedOpa(DEFAULT_POLICY_DIR) as current:
        code, summary, _ = audit(cluster, current.url)
    assert code == 0 and summary["pods"] == 2 and summary["violations"] == []
    assert report(api, "jhub")["summary"]["pass"] == 1

    with ManagedOpa(stricter_policies) as stricter:
        code, summary, stderr = audit(cluster, stricter.url)
        revision = stricter.revision
    assert code == 1, summary  # an enforced violation fails the one-shot run
    assert summary["revision"] == revision
    assert {(v["namespace"], v["rule"], v["mode"]) for v in summary["violations"]} == {
        ("jhub", "images/not-allowed", "enforce"), ("staging", "images/not-allowed", "warn")}
    assert {(u["namespace"], u["user"]) for u in summary["by_user"]} == {("jhub", "ann"), ("staging", "ann")}

    jhub = report(api, "jhub")
    assert jhub["summary"]["fail"] == 1 and jhub["summary"]["pass"] == 0
    assert jhub["metadata"]["annotations"]["jovial-guard.io/policy-revision"] == revision
    (result,) = jhub["results"]
    assert (result["policy"], result["rule"], result["result"]) == ("images", "images/not-allowed", "fail")
    assert result["resources"][0]["name"] == pod["metadata"]["name"] and result["resources"][0]["kind"] == "Pod"
    assert result["properties"]["user"] == "ann" and result["properties"]["mode"] == "enforce"
    assert "quay.io/jupyter/scipy-notebook" in result["message"]
    (warned,) = report(api, "staging")["results"]
    assert warned["result"] == "warn" and warned["properties"]["mode"] == "warn"

    # The JSON log line of the violation carries the decision id and revision.
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("event") == "cluster-audit" and line["namespace"] == "jhub"]
    assert logged and logged[0]["revision"] == revision and logged[0]["decision_id"] == result["properties"]["decision-id"]

    # Back to the admitting revision: the same report object now says pass.
    with ManagedOpa(DEFAULT_POLICY_DIR) as current:
        code, _, _ = audit(cluster, current.url)
    assert code == 0 and report(api, "jhub")["summary"] == {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0}


def test_periodic_mode_serves_gauges(api: client.ApiClient, cluster: LocalKubeCluster, stricter_policies: Path) -> None:
    """--interval serves the last pass as gauges (over the pods the test above stored)."""
    from jovial_guard.policy.opa_process import free_loopback_port

    port = free_loopback_port()
    with ManagedOpa(stricter_policies) as stricter:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jovial_guard", "audit-cluster", "--opa-url", stricter.url, "--kubeconfig", str(cluster.kubeconfig),
             "--interval", "1", "--metrics-port", str(port), "--no-write"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            text = ""
            while "jovial_guard_cluster_audit_violations{" not in text:
                assert time.monotonic() < deadline and proc.poll() is None, text
                time.sleep(0.5)
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                        text = resp.read().decode()
                except OSError:
                    pass
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert 'jovial_guard_cluster_audit_violations{mode="enforce",namespace="jhub",rule="images/not-allowed"} 1.0' in text
    assert 'jovial_guard_cluster_audit_violations{mode="warn",namespace="staging",rule="images/not-allowed"} 1.0' in text
    assert f'jovial_guard_policy_revision_info{{revision="{stricter.revision}"}} 1.0' in text
    assert "ann" not in text  # no user label
