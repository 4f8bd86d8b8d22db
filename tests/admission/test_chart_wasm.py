"""``webhook.engine: wasm`` (the default), rendered by a real helm: with signed bundles the
webhook's workers fetch the bundle from the chart's bundle service and verify it with the very
key and key id an OPA of the release verifies with; without, they compile the policy directory
the init container prepared. The pod then runs no OPA. ``webhook.engine: opa`` adds the OPA
sidecar and asks it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .jg_chart import BUNDLE_KEY_ID, BUNDLE_PUBLIC_KEY, NAMESPACE, one, template

WASM_ARGS = ["--set", "policy.bundles.enabled=true", "--set-file", f"policy.publicKey={BUNDLE_PUBLIC_KEY}",
             "--set", f"policy.keyId={BUNDLE_KEY_ID}", "--set", "webhook.engine=wasm"]


def _webhook(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = one(docs, "Deployment", "-webhook")["spec"]["template"]["spec"]
    return spec, next(c for c in spec["containers"] if c["name"] == "webhook")


def test_the_workers_verify_the_bundles_with_the_releases_key() -> None:
    docs = template(*WASM_ARGS, "--set", "auditCluster.enabled=true")
    spec, webhook = _webhook(docs)
    args = webhook["args"]
    assert "--engine=wasm" in args
    assert f"--bundle=http://jovial-guard-bundles.{NAMESPACE}.svc:8282/bundles/jovial_guard.tar.gz" in args
    assert f"--bundle-key-id={BUNDLE_KEY_ID}" in args
    assert "--bundle-key=/bundle-key/bundle-key.pem" in args
    mount = next(m for m in webhook["volumeMounts"] if m["name"] == "bundle-key")
    assert mount == {"name": "bundle-key", "mountPath": "/bundle-key", "readOnly": True}
    # Verification writes a private copy of each bundle: a writable TMPDIR on the read-only root.
    assert {"name": "TMPDIR", "value": "/bundle-tmp"} in webhook["env"]
    assert {"name": "bundle-tmp", "mountPath": "/bundle-tmp"} in webhook["volumeMounts"]
    assert {"name": "bundle-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}} in spec["volumes"]
    volume = next(v for v in spec["volumes"] if v["name"] == "bundle-key")
    configmap = one(docs, "ConfigMap", "-webhook")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    # The same key and bundle as the cluster audit's OPA.
    opa_config = json.loads(configmap["data"]["opa-audit-config.json"])
    opa_key = opa_config["keys"][BUNDLE_KEY_ID]["key"]
    assert configmap["data"]["bundle-key.pem"].strip() == opa_key.strip() == BUNDLE_PUBLIC_KEY.read_text().strip()
    assert opa_config["services"]["policy_store"]["url"] + "/" + opa_config["bundles"]["jovial_guard"]["resource"] \
        == next(a for a in args if a.startswith("--bundle=")).removeprefix("--bundle=")


def test_by_default_the_workers_compile_the_prepared_policies() -> None:
    """Without signed bundles the default engine compiles the init container's output (the
    directory the expected revision is computed from): no bundle, no key."""
    spec, webhook = _webhook(template())
    args = webhook["args"]
    assert "--engine=wasm" in args and "--policy-dir=/policies/policies" in args
    assert "--expected-policy-dir=/policies/policies" in args
    assert not any(a.startswith("--bundle") for a in args)
    assert {"name": "policies", "mountPath": "/policies", "readOnly": True} in webhook["volumeMounts"]
    assert {"name": "TMPDIR", "value": "/bundle-tmp"} in webhook["env"]
    assert {"name": "bundle-tmp", "mountPath": "/bundle-tmp"} in webhook["volumeMounts"]
    assert not any(v["name"] == "bundle-key" for v in spec["volumes"])
    assert "bundle-key.pem" not in one(template(), "ConfigMap", "-webhook")["data"]


def test_engine_opa_asks_the_sidecar() -> None:
    for values in ((), WASM_ARGS[:-2]):
        spec, webhook = _webhook(template(*values, "--set", "webhook.engine=opa"))
        assert not any(a.startswith(("--engine=", "--bundle", "--policy-dir")) for a in webhook["args"])
        assert "--opa-url=http://127.0.0.1:8181" in webhook["args"]
        assert "--opa-token-file=/opa-token/token" in webhook["args"]
        assert not any(m["name"].startswith("bundle-") for m in webhook["volumeMounts"])
        assert [c["name"] for c in spec["containers"]] == ["opa", "webhook"]
        assert "opa-token" in [c["name"] for c in spec["initContainers"]]


@pytest.mark.parametrize("values", [(), WASM_ARGS], ids=["policy-dir", "bundles"])
def test_with_the_compiled_policy_the_pod_runs_no_opa(values: tuple[str, ...]) -> None:
    """Nothing in the webhook pod would ask an OPA: no sidecar, no token, no OPA settings."""
    spec, webhook = _webhook(template(*values))
    assert [c["name"] for c in spec["containers"]] == ["webhook"]
    assert [c["name"] for c in spec.get("initContainers", [])] == ([] if values else ["policies"])
    assert not any(a.startswith(("--opa-url", "--opa-token-file")) for a in webhook["args"])
    names = {v["name"] for v in spec["volumes"]}
    assert not names & {"opa-token", "opa-authz", "opa-config"}
    assert {m["name"] for m in webhook["volumeMounts"]} <= names
    assert "opa-config.json" not in one(template(*values), "ConfigMap", "-webhook")["data"]


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(RuntimeError, match="engine"):
        template("--set", "webhook.engine=python")


def test_only_the_deciding_engine_reports_its_revision() -> None:
    """`policy deploy --replicas N` counts what reports to the bundle service: with opa the
    webhook's sidecar; the cluster audit's OPA, which decides no admission, never."""
    data = one(template(*WASM_ARGS, "--set", "webhook.engine=opa", "--set", "auditCluster.enabled=true"),
               "ConfigMap", "-webhook")["data"]
    assert json.loads(data["opa-config.json"])["status"] == {"service": "policy_store"}
    assert "status" not in json.loads(data["opa-audit-config.json"])
