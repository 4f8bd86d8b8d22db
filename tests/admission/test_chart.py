"""The Helm chart (deploy/helm/jovial-guard) rendered by a real helm: lint, every object against
the Kubernetes schema, install order, certificates, wiring and the policy data it passes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jovial_guard.normalize import POD_TEMPLATE_PATHS
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

from .jg_chart import CHART, NAMESPACE, VALUE_SETS, hook_of, one, render, run_helm, template
from .k8s_schema import validation_errors

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
AUTHZ_REGO = CHART / "files" / "authz.rego"


def by_kind(kind: str, value_set: str = "defaults") -> list[dict[str, Any]]:
    return [d for d in render(value_set) if d["kind"] == kind]


def webhook_spec(value_set: str = "defaults") -> dict[str, Any]:
    return one(render(value_set), "Deployment")["spec"]["template"]["spec"]


def test_helm_lint_passes_with_every_value_set() -> None:
    for name, args in VALUE_SETS.items():
        proc = run_helm("lint", str(CHART), "--strict", *args)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_objects_match_the_kubernetes_schema(value_set: str) -> None:
    builtin = [d for d in render(value_set) if not d["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
    assert len(builtin) > 10
    errors = {f"{d['kind']}/{d['metadata']['name']}": validation_errors(d) for d in builtin}
    assert {k: v for k, v in errors.items() if v} == {}


def test_schema_check_can_fail() -> None:
    deployment = by_kind("Deployment")[0]
    deployment["spec"]["replicas"] = "2"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    del deployment["spec"]["selector"]
    errors = validation_errors(deployment)
    assert any("replicas" in e for e in errors) and any("imagee" in e for e in errors) and any("selector" in e for e in errors)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--set", "enforcement.modes.images=block"], "enforce"),
        (["--set", "replicas=0"], "replicas"),
        (["--set", "hub.namespace=Not_A_Namespace"], "namespace"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "webhook.url=http://plain.example"], "url"),
        (["--set-json", 'egress={"groups": {"*": [{"cidr": "0.0.0.0/0"}]}}'], "notebookNetworkPolicies"),
    ],
)
def test_bad_values_are_refused_with_a_message(bad: list[str], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        template(*bad)


def test_webhook_configurations_fail_closed_and_cover_every_pod_template_kind() -> None:
    webhook_args = next(c for c in webhook_spec()["containers"] if c["name"] == "webhook")["args"]
    deadline = float(next(a.split("=", 1)[1] for a in webhook_args if a.startswith("--deadline=")))
    kind_of = {"pods": "Pod", "deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
               "replicasets": "ReplicaSet", "replicationcontrollers": "ReplicationController", "jobs": "Job",
               "cronjobs": "CronJob", "podtemplates": "PodTemplate"}
    configs = [(d, "/mutate") for d in by_kind("MutatingWebhookConfiguration")]
    configs += [(d, "/validate") for d in by_kind("ValidatingWebhookConfiguration")]
    assert len(configs) == 3  # mutate, validate and the backstop
    for config, path in configs:
        (hook,) = config["webhooks"]
        backstop = config["metadata"]["name"].endswith("-backstop")
        assert hook["failurePolicy"] == ("Ignore" if backstop else "Fail") and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] > deadline, "the internal deadline must fire before the API server's timeout"
        assert hook["clientConfig"]["service"]["path"] == path
        assert base64.b64decode(hook["clientConfig"]["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")
        assert hook["namespaceSelector"]["matchLabels"] == {"jovial-guard.io/guarded": "true"}
        pod_resources = {r for rule in hook["rules"] if rule["apiGroups"] == [""] for r in rule["resources"]}
        assert {"pods", "pods/ephemeralcontainers", "pods/resize"} <= pod_resources
        covered = {kind_of[r] for rule in hook["rules"] for r in rule["resources"] if r in kind_of}
        assert covered == set(POD_TEMPLATE_PATHS)
        assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in hook["rules"])
        if path == "/mutate":
            assert hook["reinvocationPolicy"] == "IfNeeded"


def test_configurations_exist_only_after_the_webhook_is_ready() -> None:
    """Fail-closed configurations are post-install/post-upgrade hooks weighted after the gate Job;
    the only release-time configuration is the backstop, which cannot block (Ignore)."""
    docs = render()
    gate = one(docs, "Job", "-ready")
    gate_events, gate_weight = hook_of(gate)  # type: ignore[misc]
    assert gate_events == {"post-install", "post-upgrade"}
    (container,) = gate["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["jovial-guard", "webhook", "wait-ready"]
    service = one(docs, "Service")
    assert f"--url=https://{service['metadata']['name']}.{NAMESPACE}.svc:443/readyz" in container["args"]
    for doc in docs:
        if doc["kind"].endswith("WebhookConfiguration"):
            if doc["metadata"]["name"].endswith("-backstop"):
                assert hook_of(doc) is None and doc["webhooks"][0]["failurePolicy"] == "Ignore"
            else:
                events, weight = hook_of(doc)  # type: ignore[misc]
                assert events == gate_events and weight > gate_weight
                assert doc["webhooks"][0]["failurePolicy"] == "Fail"


def test_one_ca_for_the_secret_and_every_configuration() -> None:
    from cryptography import x509

    docs = render()
    served = one(docs, "Secret", "-tls")["data"]
    ca = one(docs, "Secret", "-ca")["data"]
    assert served["ca.crt"] == ca["tls.crt"]
    for doc in docs:
        if doc["kind"].endswith("WebhookConfiguration"):
            assert doc["webhooks"][0]["clientConfig"]["caBundle"] == ca["tls.crt"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(served["tls.crt"]))
    ca_cert = x509.load_pem_x509_certificate(base64.b64decode(ca["tls.crt"]))
    cert.verify_directly_issued_by(ca_cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{one(docs, 'Service')['metadata']['name']}.{NAMESPACE}.svc" in names


def test_cert_manager_issues_and_injects_instead() -> None:
    docs = render("cert-manager+servicemonitor")
    assert not [d for d in docs if d["kind"] == "Secret"]
    serving = one(docs, "Certificate", "-webhook")
    assert serving["spec"]["secretName"] == one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always" and serving["spec"]["renewBefore"]
    for doc in docs:
        if doc["kind"].endswith("WebhookConfiguration"):
            assert "caBundle" not in doc["webhooks"][0]["clientConfig"]
            assert doc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{serving['metadata']['name']}"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "https"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_one_hub_identity_for_chart_values_install_and_policy() -> None:
    """The chart's defaults, install.sh, the z2jh values and policies/data.json name one hub identity,
    and the chart passes it to the policy as data."""
    hub = json.loads((REPO / "policies" / "data.json").read_text())["settings"]["hub"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["hub"]["namespace"], values["hub"]["serviceAccount"]) == (hub["namespace"], hub["service_account"])
    z2jh = yaml.safe_load((DEPLOY / "zero-to-jupyterhub" / "values.yaml").read_text())
    assert z2jh["hub"]["serviceAccount"]["name"] == hub["service_account"]
    install = (DEPLOY / "install.sh").read_text()
    assert "settings" in install and "data.json" in install and "jhub" not in install
    assert "hub.namespace=" in install and "hub.serviceAccount=" in install
    assert "jovial-guard.io/guarded=true" in install
    overlay = json.loads(one(render(), "ConfigMap")["data"]["policy-data.json"])
    assert overlay["settings"]["hub"] == {"namespace": hub["namespace"], "service_account": hub["service_account"]}
    moved = json.loads(one(template("--set", "hub.namespace=hub-prod", "--set", "hub.serviceAccount=jh"), "ConfigMap")["data"]["policy-data.json"])
    assert moved["settings"]["hub"] == {"namespace": "hub-prod", "service_account": "jh"}


def test_modes_exemptions_and_egress_reach_the_policy_data() -> None:
    docs = template("--set", "enforcement.modes.images=warn", "--set", "enforcement.modes.pod-security/privileged=audit",
                    "--set-json", 'exemptions=[{"namespace": "ops"}]', "--set", "notebookNetworkPolicies.enabled=false",
                    "--set-json", 'egress={"groups": {"*": [{"cidr": "0.0.0.0/0", "ports": [443]}]}}')
    settings = json.loads(one(docs, "ConfigMap")["data"]["policy-data.json"])["settings"]
    assert settings["enforcement"] == {"modes": {"images": "warn", "pod-security/privileged": "audit"}}
    assert settings["exemptions"] == [{"namespace": "ops"}]
    assert settings["egress"] == {"groups": {"*": [{"cidr": "0.0.0.0/0", "ports": [443]}]}}
    assert "egress" not in json.loads(one(render(), "ConfigMap")["data"]["policy-data.json"])["settings"]
    # A change of policy data rolls the pods (the revision they expect changes with it).
    assert one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/policy-data"] != \
        one(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/policy-data"]


def test_deployment_service_pdb_wiring() -> None:
    deployment = by_kind("Deployment")[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    pdb = by_kind("PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1
    service = by_kind("Service")[0]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    webhook = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook")
    assert port["targetPort"] in [p["name"] for p in webhook["ports"]]
    for config in by_kind("MutatingWebhookConfiguration") + by_kind("ValidatingWebhookConfiguration"):
        ref = config["webhooks"][0]["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"], ref["port"]) == (service["metadata"]["name"], service["metadata"]["namespace"], port["port"])
    assert webhook["readinessProbe"]["httpGet"]["path"] == "/readyz"
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    hard = one(render("egress-peers"), "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard


def test_opa_sidecar_listens_on_loopback_with_token_authn_and_authz() -> None:
    """With webhook.engine opa; the default engine runs no OPA (test_chart_wasm.py)."""
    spec = one(template("--set", "webhook.engine=opa"), "Deployment")["spec"]["template"]["spec"]
    opa = next(c for c in spec["containers"] if c["name"] == "opa")
    args = opa["args"]
    assert "--addr=127.0.0.1:8181" in args and "--diagnostic-addr=127.0.0.1:8282" in args
    assert "--authentication=token" in args and "--authorization=basic" in args
    assert "/opa-authz/authz.rego" in args
    assert "ports" not in opa  # nothing exposed
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["opa-token"]["emptyDir"]["medium"] == "Memory"
    config_map = by_kind("ConfigMap")[0]
    assert volumes["opa-authz"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"]["authz.rego"] == AUTHZ_REGO.read_text()
    init = {c["name"]: c for c in spec["initContainers"]}
    assert init["policies"]["command"] == ["jovial-guard", "webhook", "prepare-policies"]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_container_is_restricted(value_set: str) -> None:
    for doc in render(value_set):
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert container["resources"]["limits"]


def test_webhook_network_policy_allows_exactly_what_the_webhook_needs() -> None:
    def webhook_policy(value_set: str) -> dict[str, Any]:
        return one(render(value_set), "NetworkPolicy", "-webhook")["spec"]

    closed = webhook_policy("defaults")
    assert closed["policyTypes"] == ["Ingress", "Egress"] and closed["egress"] == []
    assert closed["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]
    opened = webhook_policy("egress-peers")
    peers = [(r["to"][0]["podSelector"]["matchLabels"], r["ports"]) for r in opened["egress"]]
    assert peers == [({"app.kubernetes.io/name": "jovial-guard-audit"}, [{"protocol": "TCP", "port": 8443}]),
                     ({"app.kubernetes.io/name": "jovial-guard-bundles"}, [{"protocol": "TCP", "port": 8443}]),
                     ({"k8s-app": "kube-dns"}, [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])]


def test_uninstall_hook_may_delete_only_the_two_configurations() -> None:
    docs = render()
    role = one(docs, "ClusterRole")
    (rule,) = role["rules"]
    assert rule["verbs"] == ["delete"] and rule["resourceNames"] == [by_kind("MutatingWebhookConfiguration")[0]["metadata"]["name"]]
    assert hook_of(role) == ({"pre-delete"}, -10)
    job = one(docs, "Job", "-uninstall")
    assert hook_of(job) == ({"pre-delete"}, 0)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["jovial-guard", "webhook", "delete-configurations"]


def test_prepare_policies_merges_the_chart_data_and_changes_the_revision(tmp_path: Path) -> None:
    from jovial_guard.admission.policy_overlay import OverlayError, prepare_policies
    from jovial_guard.policy.opa_process import policy_revision

    overlay = tmp_path / "overlay.json"
    overlay.write_text(one(template("--set", "hub.namespace=hub-prod", "--set", "enforcement.modes.images=warn"), "ConfigMap")["data"]["policy-data.json"])
    revision = prepare_policies(DEFAULT_POLICY_DIR, overlay, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "data.json").read_text())
    assert data["settings"]["hub"]["namespace"] == "hub-prod" and data["settings"]["hub"]["notebook_labels"]  # merged, not replaced
    assert data["settings"]["enforcement"]["modes"] == {"images": "warn"}
    assert revision == policy_revision(tmp_path / "out") != policy_revision(DEFAULT_POLICY_DIR)
    with pytest.raises(OverlayError, match="already exists"):
        prepare_policies(DEFAULT_POLICY_DIR, overlay, tmp_path / "out")
    overlay.write_text("[1]")
    with pytest.raises(OverlayError, match="JSON object"):
        prepare_policies(DEFAULT_POLICY_DIR, overlay, tmp_path / "other")
