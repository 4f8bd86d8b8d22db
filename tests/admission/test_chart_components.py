"""The chart's optional components, rendered by a real helm: signed-bundle policy distribution
(bundle service, its RBAC and NetworkPolicy, the OPA configuration), the periodic cluster audit,
namespace mode labels and the PolicyReport CRD. RBAC is compared whole: nothing broader passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jovial_guard.policy.bundles import SigningKey, opa_bundle_config

from .jg_chart import BUNDLE_KEY_ID, BUNDLE_PUBLIC_KEY, CHART, NAMESPACE, VALUE_SETS, one, render, run_helm, template

COMPONENTS = "bundles+cluster-audit+namespace-modes"
BUNDLES_ARGS = ["--set", "policy.bundles.enabled=true", "--set-file", f"policy.publicKey={BUNDLE_PUBLIC_KEY}",
                "--set", f"policy.keyId={BUNDLE_KEY_ID}"]


def docs() -> list[dict[str, Any]]:
    return render(COMPONENTS)


def pod_spec(suffix: str, value_set: str = COMPONENTS) -> dict[str, Any]:
    return one(render(value_set), "Deployment", suffix)["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == name)


def pod_labels(suffix: str) -> dict[str, str]:
    return one(docs(), "Deployment", suffix)["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def test_default_install_has_no_optional_component() -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in render()}
    assert not [n for n in names if n[1].endswith(("-bundles", "-cluster-audit", "-namespaces"))]
    assert "--namespace-labels" not in container(pod_spec("-webhook", "defaults"), "webhook")["args"]


def test_bundle_service_reads_only_its_configmap() -> None:
    objects = docs()
    deployment = one(objects, "Deployment", "-bundles")
    spec = deployment["spec"]["template"]["spec"]
    bundles = container(spec, "bundles")
    assert bundles["command"] == ["jovial-guard", "policy", "serve-bundles"]
    assert bundles["args"] == [f"--configmap={NAMESPACE}/jovial-guard-policy", "--host=0.0.0.0", "--port=8282"]
    service = one(objects, "Service", "-bundles")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8282, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    account = one(objects, "ServiceAccount", "-bundles")
    assert spec["serviceAccountName"] == account["metadata"]["name"] and account["automountServiceAccountToken"] is False
    role = one(objects, "Role", "-bundles")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["jovial-guard-policy"], "verbs": ["get"]}]
    binding = one(objects, "RoleBinding", "-bundles")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    assert not [d for d in objects if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
                and any(s["name"] == account["metadata"]["name"] for s in d["subjects"]) and d is not binding]


def test_only_the_webhook_and_audit_pods_reach_the_bundle_service() -> None:
    policy = one(docs(), "NetworkPolicy", "-bundles")["spec"]
    assert selects(policy["podSelector"], pod_labels("-bundles"))
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8282}]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # this namespace only
    allowed = [peer["podSelector"] for peer in rule["from"]]
    assert len(allowed) == 2
    assert selects(allowed[0], pod_labels("-webhook")) and selects(allowed[1], pod_labels("-cluster-audit"))
    assert not any(selects(s, pod_labels("-bundles")) for s in allowed)
    assert policy["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]
    narrowed = one(template(*BUNDLES_ARGS, "--set-json", 'networkPolicy.apiServer.to=[{"ipBlock": {"cidr": "10.0.0.1/32"}}]'),
                   "NetworkPolicy", "-bundles")["spec"]["egress"]
    assert narrowed[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_policy_comes_only_as_signed_bundles_from_the_bundle_service(tmp_path: Path) -> None:
    """With signed bundles nothing in the release loads the shipped policies: the webhook's
    workers verify the bundle themselves (no OPA in their pod), the cluster audit's OPA, and
    with webhook.engine opa the webhook's sidecar, load only the bundle service's."""
    objects = docs()
    config_map = one(objects, "ConfigMap", "-webhook")
    assert "policy-data.json" not in config_map["data"]
    webhook_spec = pod_spec("-webhook")
    assert [c["name"] for c in webhook_spec["containers"]] == ["webhook"]
    assert "initContainers" not in webhook_spec
    assert "policies" not in {v["name"] for v in webhook_spec["volumes"]}
    webhook_args = container(webhook_spec, "webhook")["args"]
    assert not [a for a in webhook_args if a.startswith(("--expected-revision", "--expected-policy-dir", "--policy-dir"))]
    assert "opa-config.json" not in config_map["data"]  # no webhook OPA to configure

    service = one(objects, "Service", "-bundles")["metadata"]
    url = f"http://{service['name']}.{service['namespace']}.svc:8282"
    private = tmp_path / "signing.key"  # never read: the configuration carries only the public key
    key = SigningKey(private_path=private, public_path=BUNDLE_PUBLIC_KEY, key_id=BUNDLE_KEY_ID)
    with_sidecar = template(*VALUE_SETS[COMPONENTS], "--set", "webhook.engine=opa")
    for suffix, config_key, reports, objs in (("-cluster-audit", "opa-audit-config.json", False, objects),
                                              ("-webhook", "opa-config.json", True, with_sidecar)):
        spec = one(objs, "Deployment", suffix)["spec"]["template"]["spec"]
        opa = container(spec, "opa")
        assert "--config-file=/opa-config/opa-config.json" in opa["args"]
        assert [a for a in opa["args"] if not a.startswith("--")] == ["run", "/opa-authz/authz.rego", "/opa-token/authz-data.json"]
        assert [c["name"] for c in spec["initContainers"]] == ["opa-token"]
        assert "policies" not in {v["name"] for v in spec["volumes"]}
        data = one(objs, "ConfigMap", "-webhook")
        (volume,) = [v for v in spec["volumes"] if v["name"] == "opa-config"]
        assert volume["configMap"] == {"name": data["metadata"]["name"], "items": [{"key": config_key, "path": "opa-config.json"}]}
        # Only the webhook's sidecar reports: `policy deploy --replicas N` counts webhook replicas.
        assert json.loads(data["data"][config_key]) == opa_bundle_config(service_url=url, key=key, report_status=reports)
    egress = one(objects, "NetworkPolicy", "-webhook")["spec"]["egress"]
    assert {"to": [{"podSelector": {"matchLabels": one(objects, "Service", "-bundles")["spec"]["selector"]}}],
            "ports": [{"protocol": "TCP", "port": 8282}]} in egress


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "policy.bundles.enabled=true"], "publicKey"),
        (["--set", "policy.bundles.enabled=true", "--set", "policy.publicKey=not-a-pem", "--set", "policy.keyId=k"], "publicKey"),
        (BUNDLES_ARGS + ["--set", "enforcement.modes.images=warn"], "policy store"),
        (BUNDLES_ARGS + ["--set", "auditCluster.metricsPort=8181"], "metricsPort"),
    ],
)
def test_bundle_mode_refuses_what_it_cannot_honour(extra: list[str], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        template(*extra)


def test_cluster_audit_runs_periodically_with_the_same_opa_sidecar() -> None:
    """The audit's OPA is the one the webhook runs with webhook.engine opa."""
    objects = docs()
    audit_spec = pod_spec("-cluster-audit")
    webhook_spec = one(template(*VALUE_SETS[COMPONENTS], "--set", "webhook.engine=opa"),
                       "Deployment", "-webhook")["spec"]["template"]["spec"]
    audit_opa, webhook_opa = container(audit_spec, "opa"), container(webhook_spec, "opa")
    assert audit_opa == webhook_opa
    assert audit_spec["initContainers"] == webhook_spec["initContainers"]
    (volume,) = [v for v in audit_spec["volumes"] if v["name"] == "opa-config"]
    assert volume["configMap"]["items"] == [{"key": "opa-audit-config.json", "path": "opa-config.json"}]
    audit = container(audit_spec, "audit")
    account = one(objects, "ServiceAccount", "-cluster-audit")["metadata"]["name"]
    assert audit["command"] == ["jovial-guard", "audit-cluster"]
    assert audit["args"] == ["--opa-url=http://127.0.0.1:8181", "--opa-token-file=/opa-token/token", "--interval=300",
                             "--metrics-port=9090", f"--auditor=system:serviceaccount:{NAMESPACE}:{account}", "--output=json"]
    assert audit_spec["serviceAccountName"] == account
    role = one(objects, "ClusterRole", "-cluster-audit")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]},
                             {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["get", "list", "create", "update", "delete"]}]
    binding = one(objects, "ClusterRoleBinding", "-cluster-audit")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    service = one(objects, "Service", "-cluster-audit")
    assert service["spec"]["ports"][0]["port"] == 9090 and selects({"matchLabels": service["spec"]["selector"]}, pod_labels("-cluster-audit"))
    monitor = one(objects, "ServiceMonitor", "-cluster-audit")["spec"]
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] and monitor["selector"]["matchLabels"] == service["spec"]["selector"]
    policy = one(objects, "NetworkPolicy", "-cluster-audit")["spec"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9090}]}]
    assert [r["ports"][0]["port"] for r in policy["egress"]] == [443, 8282, 53]


def test_api_credentials_reach_only_the_containers_that_call_the_api_server() -> None:
    for suffix, caller in (("-webhook", "webhook"), ("-cluster-audit", "audit"), ("-bundles", "bundles")):
        spec = pod_spec(suffix)
        assert spec["automountServiceAccountToken"] is False
        mounting = [c["name"] for c in spec["containers"] + spec.get("initContainers", [])
                    if any(m["name"] == "kube-api-access" for m in c.get("volumeMounts", []))]
        assert mounting == [caller], suffix
        (volume,) = [v for v in spec["volumes"] if v["name"] == "kube-api-access"]
        assert volume["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"
    assert "kube-api-access" not in {v["name"] for v in pod_spec("-webhook", "defaults")["volumes"]}


def test_namespace_modes_read_labels_with_get_on_namespaces_only() -> None:
    objects = docs()
    args = container(pod_spec("-webhook"), "webhook")["args"]
    assert "--namespace-labels" in args and "--namespace-labels-ttl=10" in args
    role = one(objects, "ClusterRole", "-namespaces")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
    binding = one(objects, "ClusterRoleBinding", "-namespaces")
    webhook_account = one(objects, "ServiceAccount", "-webhook")["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": webhook_account, "namespace": NAMESPACE}]
    egress = one(objects, "NetworkPolicy", "-webhook")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]} in egress
    assert egress[-1]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_the_policyreport_crd_ships_once_in_the_charts_crds_directory() -> None:
    (crd_file,) = (CHART / "crds").glob("*.yaml")
    crd = yaml.safe_load(crd_file.read_text())
    assert crd["spec"]["group"] == "wgpolicyk8s.io" and crd["spec"]["names"]["kind"] == "PolicyReport"
    assert not (CHART.parents[1] / "crds").exists()
    shown = run_helm("show", "crds", str(CHART))
    assert shown.returncode == 0 and "name: policyreports.wgpolicyk8s.io" in shown.stdout
    assert not [d for d in render() if d["kind"] == "CustomResourceDefinition"]  # helm template leaves crds/ out
    included = template("--include-crds")
    assert [d["metadata"]["name"] for d in included if d["kind"] == "CustomResourceDefinition"] == ["policyreports.wgpolicyk8s.io"]
