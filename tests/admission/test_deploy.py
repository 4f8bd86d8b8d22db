"""deploy/: OPA's authorization policy (shipped in the chart) on a real OPA, the notebook
NetworkPolicies the chart ships against their renderer, and the z2jh hook on a real KubeSpawner pod."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.hardening.egress_core import EgressRuleInvalid
from jovial_guard.hardening.egress_netpol import (
    load_settings,
    render_decision_policy,
    render_network_policies,
)
from jovial_guard.decision import Egress, EgressRule
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa

from .jg_chart import CHART, render, template
from .k8s_schema import validation_errors
from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
AUTHZ_REGO = CHART / "files" / "authz.rego"
NOTEBOOK_NETPOLS = CHART / "files" / "notebook-networkpolicies.yaml"


# -- OPA's authorization policy, on a real OPA -----------------------------------------

@pytest.fixture(scope="module")
def guarded_opa(tmp_path_factory: pytest.TempPathFactory) -> Any:
    token = secrets.token_urlsafe(32)
    data = tmp_path_factory.mktemp("authz") / "authz-data.json"
    data.write_text(json.dumps({"jovial_guard_authz": {"token_sha256": hashlib.sha256(token.encode()).hexdigest()}}))
    with ManagedOpa(
        DEFAULT_POLICY_DIR,
        extra_args=["--authentication=token", "--authorization=basic"],
        data_paths=[AUTHZ_REGO, data],
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
    on_disk = [d for d in yaml.safe_load_all(NOTEBOOK_NETPOLS.read_text()) if d]
    assert on_disk == rendered, f"run: jovial-guard webhook netpol > {NOTEBOOK_NETPOLS.relative_to(REPO)}"
    in_chart = [d for d in render() if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == "jhub"]
    assert in_chart == rendered
    moved = [d for d in template("--set", "hub.namespace=hub-prod") if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] in {p["metadata"]["name"] for p in rendered}]
    assert moved == render_network_policies(load_settings(REPO / "policies" / "data.json"), namespace="hub-prod")


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


def test_metadata_endpoint_is_excepted_unless_allowed_exactly() -> None:
    broad = render_network_policies({"egress": {"groups": {"*": [{"cidr": "169.254.0.0/16"}]}}})
    everyone = {p["metadata"]["name"]: p["spec"] for p in broad}["jovial-guard-egress-all"]
    assert everyone["egress"][0]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    exact = render_network_policies({"egress": {"groups": {"*": [{"cidr": "169.254.169.254/32", "ports": [80]}]}}})
    everyone = {p["metadata"]["name"]: p["spec"] for p in exact}["jovial-guard-egress-all"]
    assert everyone["egress"][0]["to"][0]["ipBlock"] == {"cidr": "169.254.169.254/32"}
    with pytest.raises(EgressRuleInvalid, match="contains the blocked range"):
        render_network_policies({"egress": {"hub": [{"cidr": "169.254.0.0/16", "ports": [8081]}]}})


def test_policy_from_a_decision_egress_spec() -> None:
    egress = Egress(allow=(EgressRule("0.0.0.0/0", (443,)),), dns=("10.96.0.10/32",), hub=(EgressRule("10.20.0.5/32", (8081,)),),
                    blocked=("10.0.0.0/8",))
    policy = render_decision_policy(egress, name="jg-alice", namespace="jhub",
                                    pod_labels={"hub.jupyter.org/username": "alice"})
    assert validation_errors(policy) == []
    cidrs = [rule["to"][0]["ipBlock"]["cidr"] for rule in policy["spec"]["egress"]]
    assert cidrs == ["10.96.0.10/32", "10.20.0.5/32", "0.0.0.0/0"]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 53}, {"protocol": "UDP", "port": 53}]
    assert policy["spec"]["egress"][-1]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "169.254.169.254/32"]


@pytest.mark.parametrize("bad", [{"egress": {"groups": {"*": [{"cidr": "not-a-cidr"}]}}}, {"egress": {"groups": {"*": [{"cidr": "1.2.3.4/32", "protocol": "icmp"}]}}}, {}])
def test_bad_egress_data_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(EgressRuleInvalid):
        render_network_policies(bad)


# -- zero-to-jupyterhub values: the hook on a real KubeSpawner pod -----------------------

def z2jh_extra_config() -> Config:
    """The hub configuration deploy/zero-to-jupyterhub/values.yaml's extraConfig makes."""
    values = yaml.safe_load((DEPLOY / "zero-to-jupyterhub" / "values.yaml").read_text())
    config = Config()
    exec(compile(values["hub"]["extraConfig"]["jovial-guard"], "values.yaml:hub.extraConfig", "exec"), {"c": config})  # noqa: S102 - our own snippet
    return config


async def test_z2jh_hook_makes_pods_the_webhook_admits_with_group_egress(engine: PolicyEngine) -> None:
    config = z2jh_extra_config()
    from kubespawner import KubeSpawner

    # The spawner that puts the webhook's refusal on the spawn page (tests/integration/
    # test_node_kubespawner.py shows it on a real hub) and annotates the pod.
    spawner_class = import_item(config.JupyterHub.spawner_class)
    assert issubclass(spawner_class, KubeSpawner)
    from .kubespawner_pods import _dummy_kubeconfig

    with _dummy_kubeconfig():
        hook = spawner_class(_mock=True, user=SimpleNamespace(name="tess", id=1, url="/user/tess/", groups=[])).modify_pod_hook

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

    import jsonpatch

    doc = jsonpatch.apply_patch(doc, json.loads(base64.b64decode(result.body["response"]["patch"])))
    assert doc["metadata"]["labels"]["egress.jovial-guard.io/astro"] == "allow"
    # The group's NetworkPolicy selects this pod.
    astro = next(p for p in render_network_policies(load_settings(REPO / "policies" / "data.json")) if p["metadata"]["name"] == "jovial-guard-egress-astro")
    assert astro["spec"]["podSelector"]["matchLabels"].items() <= doc["metadata"]["labels"].items()


async def test_z2jh_spawner_turns_the_webhooks_refusal_into_the_policys_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes_asyncio.client.rest import ApiException
    from kubespawner import KubeSpawner

    from .kubespawner_pods import _dummy_kubeconfig

    spawner_class = import_item(z2jh_extra_config().JupyterHub.spawner_class)
    refusal = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403, "message":
               'admission webhook "mutate.jovial-guard.io" denied the request: [profiles/not-allowed] Choose another profile.'}
    raised: list[BaseException] = []

    async def failing_start(self: KubeSpawner) -> None:
        raise raised[-1]

    monkeypatch.setattr(KubeSpawner, "start", failing_start)
    user = SimpleNamespace(name="tess", id=1, url="/user/tess/", groups=[])
    with _dummy_kubeconfig():
        spawner = spawner_class(_mock=True, user=user)
    denied = ApiException(status=403, reason="Forbidden")
    denied.body = json.dumps(refusal)
    raised.append(denied)
    with pytest.raises(RuntimeError) as err:
        await spawner.start()
    assert str(err.value) == "the policy refused this server: [profiles/not-allowed] Choose another profile."
    # Anything else (another webhook, a quota, a timeout) reaches JupyterHub unchanged.
    for other in (ApiException(status=403, reason="Forbidden"), TimeoutError("pod did not start")):
        if isinstance(other, ApiException):
            other.body = json.dumps({**refusal, "message": 'admission webhook "other.example.org" denied the request: no'})
        raised.append(other)
        with pytest.raises(type(other)) as unchanged:
            await spawner.start()
        assert unchanged.value is other
