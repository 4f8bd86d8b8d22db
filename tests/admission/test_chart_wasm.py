"""``webhook.engine: wasm``, rendered by a real helm: the webhook's workers fetch the signed
bundle from the chart's bundle service and verify it with the very key and key id the OPA
sidecar verifies with; without signed bundles the chart refuses the setting."""

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


def test_the_default_engine_asks_the_sidecar() -> None:
    _, webhook = _webhook(template())
    assert not any(a.startswith(("--engine=", "--bundle")) for a in webhook["args"])
    assert "--opa-url=http://127.0.0.1:8181" in webhook["args"]


def test_wasm_without_signed_bundles_is_refused() -> None:
    with pytest.raises(RuntimeError, match="needs policy.bundles.enabled"):
        template("--set", "webhook.engine=wasm")
    with pytest.raises(RuntimeError, match="engine"):
        template("--set", "webhook.engine=python")
