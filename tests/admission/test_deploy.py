"""deploy/: every manifest against the Kubernetes schema, the wiring between them, OPA's
authorization policy on a real OPA, the NetworkPolicy renderer and the z2jh hook."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.admission.networkpolicy import (
    EgressDataError,
    ip_block,
    load_settings,
    render_for_egress,
    render_network_policies,
)
from jovial_guard.decision import Egress, EgressRule
from jovial_guard.normalize import POD_TEMPLATE_PATHS
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa

from .k8s_schema import validation_errors
from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def kustomize_resources() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/` applies (resources + the configMapGenerator)."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for rel in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / rel).read_text()) if d]
    for gen in kustomization["configMapGenerator"]:
        docs.append({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": gen["name"], "namespace": gen["namespace"], "labels": kustomization["generatorOptions"]["labels"]},
            "data": {Path(f).name: (DEPLOY / f).read_text() for f in gen["files"]},
        })
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in kustomize_resources() if d["kind"] == kind]


def test_every_yaml_in_deploy_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.yaml")} - {"kustomization.yaml", "zero-to-jupyterhub/values.yaml"}
    assert on_disk == listed


@pytest.mark.parametrize("doc", kustomize_resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert validation_errors(doc) == []


def test_schema_check_can_fail() -> None:
    deployment = json.loads(json.dumps(by_kind("Deployment")[0]))
    deployment["spec"]["replicas"] = "2"
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    del deployment["spec"]["selector"]
    errors = validation_errors(deployment)
    assert any("replicas" in e for e in errors) and any("imagee" in e for e in errors) and any("selector" in e for e in errors)


def test_webhook_configurations_fail_closed_and_cover_every_pod_template_kind() -> None:
    deployment = by_kind("Deployment")[0]
    webhook_args = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook")["args"]
    deadline = float(next(a.split("=", 1)[1] for a in webhook_args if a.startswith("--deadline=")))
    kind_of = {"pods": "Pod", "deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
               "replicasets": "ReplicaSet", "replicationcontrollers": "ReplicationController", "jobs": "Job",
               "cronjobs": "CronJob", "podtemplates": "PodTemplate"}
    for config, path in (("MutatingWebhookConfiguration", "/mutate"), ("ValidatingWebhookConfiguration", "/validate")):
        (hook,) = by_kind(config)[0]["webhooks"]
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] > deadline, "the internal deadline must fire before the API server's timeout"
        assert hook["clientConfig"]["service"]["path"] == path
        assert hook["namespaceSelector"]["matchLabels"] == {"jovial-guard.io/guarded": "true"}
        pod_resources = {r for rule in hook["rules"] if rule["apiGroups"] == [""] for r in rule["resources"]}
        assert {"pods", "pods/ephemeralcontainers", "pods/resize"} <= pod_resources
        covered = {kind_of[r] for rule in hook["rules"] for r in rule["resources"] if r in kind_of}
        assert covered == set(POD_TEMPLATE_PATHS)
        assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in hook["rules"])
        if config.startswith("Mutating"):
            assert hook["reinvocationPolicy"] == "IfNeeded"


def test_one_hub_identity_for_install_values_and_policy() -> None:
    """install.sh, the z2jh values and policies/data.json name the same hub identity."""
    hub = json.loads((REPO / "policies" / "data.json").read_text())["settings"]["hub"]
    values = yaml.safe_load((DEPLOY / "zero-to-jupyterhub" / "values.yaml").read_text())
    assert values["hub"]["serviceAccount"]["name"] == hub["service_account"]
    install = (DEPLOY / "install.sh").read_text()
    assert "settings" in install and "data.json" in install and "jhub" not in install
    assert "jovial-guard.io/guarded=true" in install


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


def test_opa_sidecar_listens_on_loopback_with_token_authn_and_authz() -> None:
    spec = by_kind("Deployment")[0]["spec"]["template"]["spec"]
    opa = next(c for c in spec["containers"] if c["name"] == "opa")
    args = opa["args"]
    assert "--addr=127.0.0.1:8181" in args and "--diagnostic-addr=127.0.0.1:8282" in args
    assert "--authentication=token" in args and "--authorization=basic" in args
    assert "/opa-authz/authz.rego" in args
    assert "ports" not in opa  # nothing exposed
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["opa-token"]["emptyDir"]["medium"] == "Memory"
    assert volumes["opa-authz"]["configMap"]["name"] == by_kind("ConfigMap")[0]["metadata"]["name"]


def test_every_container_in_deploy_is_restricted() -> None:
    spec = by_kind("Deployment")[0]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["containers"] + spec["initContainers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        assert container["resources"]["limits"]


# -- OPA's authorization policy, on a real OPA -----------------------------------------

@pytest.fixture(scope="module")
def guarded_opa(tmp_path_factory: pytest.TempPathFactory) -> Any:
    token = secrets.token_urlsafe(32)
    data = tmp_path_factory.mktemp("authz") / "authz-data.json"
    data.write_text(json.dumps({"jovial_guard_authz": {"token_sha256": hashlib.sha256(token.encode()).hexdigest()}}))
    with ManagedOpa(
        DEFAULT_POLICY_DIR,
        extra_args=["--authentication=token", "--authorization=basic"],
        data_paths=[DEPLOY / "opa" / "authz.rego", data],
    ) as opa:
        yield SimpleNamespace(url=opa.url, token=token, revision=opa.revision)


DECISION = "/v1/data/jovial_guard/main/decision"
POD_INPUT = {"input": {"workload": {"origin": "admission", "kind": "Pod", "pod": {"metadata": {}, "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]}}}}}


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v1/policies", None),
        ("PUT", "/v1/policies/evil", "package evil\nallow := true"),
        ("DELETE", "/v1/policies/main.rego", None),
        ("GET", "/v1/data", None),
        ("GET", "/v1/data/settings", None),
        ("GET", "/v1/data/jovial_guard_authz", None),
        ("PUT", "/v1/data/settings/images/allowed_prefixes", json.dumps(["docker.io/"])),
        ("PATCH", "/v1/data/settings", "[]"),
        ("POST", "/v1/query", json.dumps({"query": "data"})),
        ("POST", "/v1/compile", json.dumps({"query": "data.jovial_guard.main.decision"})),
        ("GET", "/v1/config", None),
        ("GET", "/v1/status", None),
        ("POST", "/v0/data/jovial_guard/main/decision", json.dumps({"workload": {}})),
        ("POST", DECISION, json.dumps(POD_INPUT)),
    ],
)
@pytest.mark.parametrize("who", ["anonymous", "wrong-token", "webhook"])
def test_opa_rest_api_is_closed_except_the_decision(guarded_opa: Any, method: str, path: str, body: str | None, who: str) -> None:
    headers = {}
    if who == "wrong-token":
        headers["Authorization"] = "Bearer " + secrets.token_urlsafe(32)
    elif who == "webhook":
        headers["Authorization"] = f"Bearer {guarded_opa.token}"
    resp = requests.request(method, guarded_opa.url + path, data=body, headers=headers, timeout=5)
    if who == "webhook" and method == "POST" and path == DECISION:
        assert resp.status_code == 200 and "result" in resp.json()
    else:
        assert resp.status_code in (401, 403), (resp.status_code, resp.text[:200])
    # Nothing was changed: the policy still answers the same.
    check = requests.post(guarded_opa.url + DECISION, json=POD_INPUT, headers={"Authorization": f"Bearer {guarded_opa.token}"}, timeout=5)
    assert check.json()["result"]["revision"] == guarded_opa.revision


def test_webhook_works_through_the_guarded_opa_with_its_token(guarded_opa: Any) -> None:
    import asyncio

    async def run() -> tuple[dict[str, Any], str]:
        pod = as_api_server_sends(await kubespawner_pod(username="sam"))
        async with OpaConnection(OpaEndpoint(guarded_opa.url, token=guarded_opa.token), timeout=5) as conn:
            engine = PolicyEngine(conn, deadline=5)
            result = await AdmissionHandler(engine).handle(json.dumps(admission_review(pod)).encode(), mode="mutate")
            return result.body["response"], await engine.revision()

    response, revision = asyncio.run(run())
    assert response["allowed"] is True and revision == guarded_opa.revision
    assert requests.get(guarded_opa.url + "/health", timeout=5).status_code == 200


# -- NetworkPolicies from the egress data ------------------------------------------------

def test_checked_in_notebook_network_policies_are_rendered_from_data_json() -> None:
    rendered = render_network_policies(load_settings(REPO / "policies" / "data.json"), namespace="jhub")
    on_disk = [d for d in yaml.safe_load_all((DEPLOY / "networkpolicy" / "notebooks.yaml").read_text()) if d]
    assert on_disk == rendered, "run: jovial-guard webhook netpol > deploy/networkpolicy/notebooks.yaml"


def test_network_policies_default_deny_dns_hub_groups_and_metadata() -> None:
    settings = {
        "egress": {
            "dns": ["10.96.0.10/32"],
            "hub": [{"cidr": "10.20.0.5/32", "ports": [8081]}],
            "blocked": ["169.254.0.0/16", "10.0.0.0/8", "fc00::/7"],
            "groups": {
                "*": [{"cidr": "0.0.0.0/0", "ports": [443]}],
                "astro": [{"cidr": "10.213.250.0/24", "ports": [80, 443], "protocol": "tcp"}],
                "bad group name!": [{"cidr": "1.2.3.0/24"}],
            },
        }
    }
    policies = {p["metadata"]["name"]: p["spec"] for p in render_network_policies(settings)}
    deny = policies["jovial-guard-default-deny"]
    assert deny["egress"] == [] and deny["ingress"] == [] and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert {"ipBlock": {"cidr": "10.96.0.10/32", "except": []}} not in policies["jovial-guard-dns"]["egress"][1]["to"]
    everyone = policies["jovial-guard-egress-all"]["egress"][0]
    assert everyone["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.0.0/16", "169.254.169.254/32"]}
    assert everyone["ports"] == [{"protocol": "TCP", "port": 443}]
    astro = policies["jovial-guard-egress-astro"]
    assert astro["podSelector"]["matchLabels"]["egress.jovial-guard.io/astro"] == "allow"
    assert astro["egress"][0]["to"][0]["ipBlock"] == {"cidr": "10.213.250.0/24"}  # named explicitly inside a blocked range
    assert not any("bad" in name for name in policies)  # no label can carry it: nobody gets it
    for policy in render_network_policies(settings):
        assert validation_errors(policy) == []


def test_metadata_endpoint_can_never_be_allowed() -> None:
    with pytest.raises(EgressDataError):
        ip_block("169.254.169.254/32", [])
    with pytest.raises(EgressDataError):
        render_network_policies({"egress": {"groups": {"*": [{"cidr": "169.254.169.254/32"}]}}})
    assert "169.254.169.254/32" in ip_block("169.254.0.0/16", [])["except"]


def test_policy_from_a_decision_egress_spec() -> None:
    egress = Egress(allow=(EgressRule("0.0.0.0/0", (443,)),), dns=("10.96.0.10/32",), hub=(EgressRule("10.20.0.5/32", (8081,)),),
                    blocked=("10.0.0.0/8",))
    policy = render_for_egress(egress, name="jg-alice", namespace="jhub", pod_labels={"hub.jupyter.org/username": "alice"})
    assert validation_errors(policy) == []
    cidrs = [rule["to"][0]["ipBlock"]["cidr"] for rule in policy["spec"]["egress"]]
    assert cidrs == ["10.96.0.10/32", "10.96.0.10/32", "10.20.0.5/32", "0.0.0.0/0"]
    assert policy["spec"]["egress"][-1]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "169.254.169.254/32"]


@pytest.mark.parametrize("bad", [{"egress": {"groups": {"*": [{"cidr": "not-a-cidr"}]}}}, {"egress": {"groups": {"*": [{"cidr": "1.2.3.4/32", "protocol": "icmp"}]}}}, {}])
def test_bad_egress_data_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(EgressDataError):
        render_network_policies(bad)


# -- zero-to-jupyterhub values: the hook on a real KubeSpawner pod -----------------------

async def test_z2jh_hook_makes_pods_the_webhook_admits_with_group_egress(engine: PolicyEngine) -> None:
    values = yaml.safe_load((DEPLOY / "zero-to-jupyterhub" / "values.yaml").read_text())
    code = values["hub"]["extraConfig"]["jovial-guard"]
    config = SimpleNamespace(KubeSpawner=SimpleNamespace())
    exec(compile(code, "values.yaml:hub.extraConfig", "exec"), {"c": config})  # noqa: S102 - our own snippet
    hook = config.KubeSpawner.modify_pod_hook

    from kubernetes_asyncio.client import ApiClient, V1ObjectMeta, V1Pod

    pod_doc = await kubespawner_pod(username="tess", groups=())
    client = ApiClient()
    try:
        pod = client._ApiClient__deserialize(pod_doc, "V1Pod")  # type: ignore[attr-defined]
    finally:
        await client.close()
    assert isinstance(pod, V1Pod) and isinstance(pod.metadata, V1ObjectMeta)
    spawner = SimpleNamespace(user=SimpleNamespace(name="tess", groups=[SimpleNamespace(name="astro"), SimpleNamespace(name="large-memory")]),
                              user_options={"profile": "large-memory"})
    hooked = hook(spawner, pod)
    client = ApiClient()
    try:
        doc = as_api_server_sends(client.sanitize_for_serialization(hooked))
    finally:
        await client.close()
    assert json.loads(doc["metadata"]["annotations"]["jovial-guard.io/groups"]) == ["astro", "large-memory"]
    assert doc["metadata"]["annotations"]["jovial-guard.io/profile"] == "large-memory"
    assert not any(k.startswith("egress.jovial-guard.io/") for k in doc["metadata"]["labels"])
    assert config.KubeSpawner.user_namespace_labels == {"jovial-guard.io/guarded": "true"}
    result = await AdmissionHandler(engine).handle(json.dumps(admission_review(doc)).encode(), mode="mutate")
    assert result.body["response"]["allowed"] is True
    # The webhook renders the group's egress label from the groups the hub vouched for.
    import base64

    import jsonpatch

    doc = jsonpatch.apply_patch(doc, json.loads(base64.b64decode(result.body["response"]["patch"])))
    assert doc["metadata"]["labels"]["egress.jovial-guard.io/astro"] == "allow"
    # The group's NetworkPolicy selects this pod.
    astro = next(p for p in render_network_policies(load_settings(REPO / "policies" / "data.json")) if p["metadata"]["name"] == "jovial-guard-egress-astro")
    assert astro["spec"]["podSelector"]["matchLabels"].items() <= doc["metadata"]["labels"].items()
