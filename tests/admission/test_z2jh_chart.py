"""zero-to-jupyterhub's own chart through the webhook handler (real OPA, real helm).

Every object z2jh renders (default values, the project's values with a profileList, and
automatic HTTPS) is either of a kind the webhook configurations never route, or is
admitted: the object as the installer applies it, and the Pod its controller then
creates. Every notebook pod KubeSpawner makes under the chart's own hub configuration
comes out hardened. The end-to-end variant with a real kube-apiserver is in
tests/integration/test_apiserver_e2e.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
import yaml

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.normalize import POD_TEMPLATE_PATHS
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import REPO_ROOT

from .kubespawner_pods import admission_review, as_api_server_sends
from .test_handler import assert_restricted
from .z2jh_chart import RENDERINGS, hub_config, notebook_pod, pod_from_template, render
from .z2jh_chart import find_helm as _find_helm

HELM = _find_helm()
if HELM is None:
    # A missing build must not turn the chart proof into a green skip.
    pytest.fail("helm is not built: run scripts/test.d/60-helm.sh (./guard test does)", pytrace=False)

HUB = "system:serviceaccount:jhub:hub"
INSTALLER = ("kubernetes-admin", ["system:masters", "system:authenticated"])
CONTROLLER = {"Deployment": "replicaset-controller", "StatefulSet": "statefulset-controller",
              "DaemonSet": "daemon-set-controller", "Job": "job-controller"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(HELM, name) for name in RENDERINGS}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def handler(engine: PolicyEngine) -> AdmissionHandler:
    return AdmissionHandler(engine)


def review(obj: dict[str, Any], username: str, groups: list[str]) -> bytes:
    doc = admission_review(obj, username=username)
    doc["request"]["userInfo"]["groups"] = groups
    return json.dumps(doc).encode()


def patch_of(result: Any) -> list[dict[str, Any]]:
    raw = result.body["response"].get("patch")
    return json.loads(base64.b64decode(raw)) if raw else []


async def admitted(handler: AdmissionHandler, obj: dict[str, Any], username: str, groups: list[str]) -> dict[str, Any]:
    """Mutate, apply the patch, validate: the object as it would be stored."""
    result = await handler.handle(review(obj, username, groups), mode="mutate")
    response = result.body["response"]
    assert response["allowed"] is True, f"{obj['kind']}/{obj['metadata']['name']}: {response.get('status')}"
    patched = jsonpatch.apply_patch(obj, patch_of(result))
    validated = await handler.handle(review(patched, username, groups), mode="validate")
    assert validated.body["response"]["allowed"] is True, validated.body["response"].get("status")
    return patched


def routed_resources() -> set[tuple[str, str]]:
    from .jg_chart import render as render_jovial_guard

    docs = [d for d in render_jovial_guard() if d["kind"].endswith("WebhookConfiguration")]
    return {(group, resource) for doc in docs for hook in doc["webhooks"] for rule in hook["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]}


def test_the_chart_renders_its_components(rendered: dict[str, list[dict[str, Any]]]) -> None:
    components = {(d["kind"], d["metadata"]["name"]) for docs in rendered.values() for d in docs if d["kind"] in POD_TEMPLATE_PATHS}
    assert components >= {("Deployment", "hub"), ("Deployment", "proxy"), ("Deployment", "user-scheduler"),
                          ("DaemonSet", "continuous-image-puller"), ("DaemonSet", "hook-image-puller"),
                          ("Job", "hook-image-awaiter"), ("StatefulSet", "user-placeholder"), ("Deployment", "autohttps")}


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_objects_without_a_pod_template_are_not_routed(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    routed = routed_resources()
    for doc in rendered[name]:
        if doc["kind"] in POD_TEMPLATE_PATHS:
            continue
        group = doc["apiVersion"].rpartition("/")[0]
        plural = doc["kind"].lower() + "s"
        assert (group, plural) not in routed, doc["kind"]


@pytest.mark.parametrize("name", list(RENDERINGS))
async def test_every_z2jh_component_and_its_pods_are_admitted(handler: AdmissionHandler, rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    workloads = [d for d in rendered[name] if d["kind"] in POD_TEMPLATE_PATHS]
    assert workloads
    for obj in workloads:
        stored = await admitted(handler, obj, *INSTALLER)
        pod = pod_from_template(stored, POD_TEMPLATE_PATHS[obj["kind"]])
        controller = f"system:serviceaccount:kube-system:{CONTROLLER[obj['kind']]}"
        result = await handler.handle(review(pod, controller, ["system:serviceaccounts"]), mode="mutate")
        assert result.body["response"]["allowed"] is True, result.body["response"].get("status")
        assert result.body["response"]["auditAnnotations"]["scope"] == "platform"
        assert_restricted(await admitted(handler, pod, controller, ["system:serviceaccounts"]))


def hub_config_of(rendered: dict[str, list[dict[str, Any]]], name: str) -> Any:
    return hub_config(rendered[name])


#: (user, groups) able to use each profile of the project's values.
PROFILE_USERS = {None: ("alice", ("astro",)), "default": ("alice", ("astro",)), "large-memory": ("bob", ("large-memory",))}


async def test_notebooks_under_the_projects_values_come_out_hardened(handler: AdmissionHandler, rendered: dict[str, list[dict[str, Any]]]) -> None:
    config = hub_config_of(rendered, "jovial-guard-values")
    slugs = [p["slug"] for p in config.KubeSpawner.profile_list]
    assert slugs == ["default", "large-memory"]
    for slug in slugs:
        user, groups = PROFILE_USERS[slug]
        pod = as_api_server_sends(await notebook_pod(config, username=user, groups=groups, profile=slug))
        assert json.loads(pod["metadata"]["annotations"]["jovial-guard.io/groups"]) == sorted(groups)
        stored = await admitted(handler, pod, HUB, ["system:serviceaccounts"])
        assert_restricted(stored)
        container = stored["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        labels = stored["metadata"]["labels"]
        assert labels["component"] == "singleuser-server"
        egress = {k for k in labels if k.startswith("egress.jovial-guard.io/")}
        assert egress == ({"egress.jovial-guard.io/astro"} if "astro" in groups else set())


async def test_notebooks_under_z2jh_defaults(handler: AdmissionHandler, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """z2jh's default singleuser image is admitted and hardened. Its default cloud-metadata
    blocker is a privileged root init container: denied with the rule that says so (the
    project's NetworkPolicies block metadata instead; see the README)."""
    config = hub_config_of(rendered, "defaults")
    assert config.KubeSpawner.image.startswith("quay.io/jupyterhub/k8s-singleuser-sample:")
    assert [c.name for c in config.KubeSpawner.init_containers] == ["block-cloud-metadata"]
    pod = as_api_server_sends(await notebook_pod(config, username="carol"))
    denied = await handler.handle(review(pod, HUB, ["system:serviceaccounts"]), mode="mutate")
    message = denied.body["response"]["status"]["message"]
    assert denied.body["response"]["allowed"] is False
    assert "[pod-security/privileged]" in message and "block-cloud-metadata" in message
    config.KubeSpawner.init_containers = []  # singleuser.cloudMetadata.blockWithIptables=false
    pod = as_api_server_sends(await notebook_pod(config, username="carol"))
    stored = await admitted(handler, pod, HUB, ["system:serviceaccounts"])
    assert_restricted(stored)
    assert stored["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_jovial_guard_check_admits_the_charts_workloads(rendered: dict[str, list[dict[str, Any]]], name: str, tmp_path: Any) -> None:
    """The same objects through `jovial-guard check`, as an operator would lint a rendering."""
    import os
    import subprocess
    import sys

    workloads = [d for d in rendered[name] if d["kind"] in POD_TEMPLATE_PATHS]
    path = tmp_path / f"{name}.yaml"
    # JSON documents in one YAML stream: helm quotes strings such as a checksum "96e2" that
    # Kubernetes would read as a number, and a PyYAML dump would drop those quotes.
    path.write_text("---\n".join(json.dumps(w) + "\n" for w in workloads))
    proc = subprocess.run([sys.executable, "-m", "jovial_guard", "check", str(path), "--format", "jsonl"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(results) == len(workloads) and all(r["allowed"] for r in results)
