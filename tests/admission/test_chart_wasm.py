"""``webhook.engine: wasm`` (the default), rendered by a real helm: with signed bundles the
webhook's workers fetch the bundle from the chart's bundle service and verify it with the very
key and key id the OPA sidecar verifies with; without, they compile the policy directory the
sidecar loads. ``webhook.engine: opa`` asks the sidecar."""

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


def test_the_workers_verify_the_sidecars_bundles_with_the_sidecars_key() -> None:
    docs = template(*WASM_ARGS)
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
    opa_config = json.loads(configmap["data"]["opa-config.json"])
    sidecar_key = opa_config["keys"][BUNDLE_KEY_ID]["key"]
    assert configmap["data"]["bundle-key.pem"].strip() == sidecar_key.strip() == BUNDLE_PUBLIC_KEY.read_text().strip()
    assert opa_config["services"]["policy_store"]["url"] + "/" + opa_config["bundles"]["jovial_guard"]["resource"] \
        == next(a for a in args if a.startswith("--bundle=")).removeprefix("--bundle=")


def test_by_default_the_workers_compile_the_policies_the_sidecar_loads() -> None:
    """Without signed bundles the default engine compiles the init container's output (the
    directory the sidecar loads and the expected revision is computed from): no bundle, no key."""
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
        _, webhook = _webhook(template(*values, "--set", "webhook.engine=opa"))
        assert not any(a.startswith(("--engine=", "--bundle", "--policy-dir")) for a in webhook["args"])
        assert "--opa-url=http://127.0.0.1:8181" in webhook["args"]
        assert not any(m["name"].startswith("bundle-") for m in webhook["volumeMounts"])


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(RuntimeError, match="engine"):
        template("--set", "webhook.engine=python")


def test_only_the_deciding_engine_reports_its_revision() -> None:
    """`policy deploy --replicas N` counts what reports to the bundle service: with wasm the
    workers (they decide), so the sidecar, which then decides nothing, reports no status;
    with opa the sidecar does."""
    for engine, sidecar_reports in (("wasm", False), ("opa", True)):
        docs = template(*WASM_ARGS, "--set", f"webhook.engine={engine}")
        opa_config = json.loads(one(docs, "ConfigMap", "-webhook")["data"]["opa-config.json"])
        assert ("status" in opa_config) is sidecar_reports, engine
        if sidecar_reports:
            assert opa_config["status"] == {"service": "policy_store"}
