"""The webhook's decision logic against the real OPA and the repository's policies.

Inputs are pods made by KubeSpawner's own ``get_pod_manifest`` (``make_pod``) and the Pod
Security Standards fixtures. The patched pod must come back clean: allowed by the policy
with an empty patch, and passing /validate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import requests

from jovial_guard.admission.cache import DecisionCache
from jovial_guard.admission.handler import (
    NOT_HARDENED,
    UNSUPPORTED_KIND,
    AdmissionHandler,
    AdmissionSettings,
)
from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa
from tests.conftest import FIXTURES, load_documents

from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

PSS = FIXTURES / "pss"


def body(obj: dict[str, Any], **kwargs: Any) -> bytes:
    return json.dumps(admission_review(obj, **kwargs)).encode()


def patch_of(result: Any) -> list[dict[str, Any]]:
    raw = result.body["response"].get("patch")
    return json.loads(base64.b64decode(raw)) if raw else []


@pytest.fixture(scope="module")
def handler(engine: PolicyEngine) -> AdmissionHandler:
    return AdmissionHandler(engine, cache=DecisionCache())


PROFILE_CASES = [
    ("alice", (), "default"),
    ("bob", ("large-memory",), "large-memory"),
    ("carol", ("astro",), "default"),
    ("dave", (), "bare"),
]


@pytest.mark.parametrize("username, groups, profile", PROFILE_CASES)
async def test_kubespawner_pod_is_patched_to_restricted(handler: AdmissionHandler, username: str, groups: tuple[str, ...], profile: str) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username=username, groups=groups, profile=profile))
    review = admission_review(pod)
    result = await handler.handle(json.dumps(review).encode(), mode="mutate")
    response = result.body["response"]
    assert result.status == 200 and response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True, response
    assert response["patchType"] == "JSONPatch"
    assert response["auditAnnotations"]["policy-revision"].startswith("sha256:")
    assert len(response["auditAnnotations"]["decision-id"]) == 32
    patched = jsonpatch.apply_patch(pod, patch_of(result))
    assert_restricted(patched)

    # The patched pod through the policy again: allowed, nothing left to patch.
    again = await handler.handle(body(patched), mode="mutate")
    assert again.body["response"]["allowed"] is True and "patch" not in again.body["response"]
    validated = await handler.handle(body(patched), mode="validate")
    assert validated.body["response"]["allowed"] is True


def assert_restricted(pod: dict[str, Any]) -> None:
    """The Pod Security 'restricted' fields the patch must have set (checked by the real
    API server's PodSecurity admission in the end-to-end test as well)."""
    spec = pod["spec"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert "ALL" in sc["capabilities"]["drop"]
        assert not set(sc["capabilities"].get("add", [])) - {"NET_BIND_SERVICE"}
        assert sc.get("privileged") is not True
    for volume in spec.get("volumes", []):
        assert "hostPath" not in volume


async def test_notebook_gets_read_only_root_with_scratch(handler: AdmissionHandler) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="erin"))
    patched = jsonpatch.apply_patch(pod, patch_of(await handler.handle(body(pod), mode="mutate")))
    container = patched["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {"/tmp", "/home/jovyan"} <= set(mounts)
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def dangerous_documents() -> list[dict[str, Any]]:
    docs = load_documents(PSS / "baseline-violations.yaml") + load_documents(PSS / "restricted-violations.yaml")
    docs += [d for d in load_documents(PSS / "workloads.yaml") if "bad" in d["metadata"]["name"]]
    return docs


@pytest.mark.parametrize("doc", dangerous_documents(), ids=lambda d: d["metadata"]["name"])
@pytest.mark.parametrize("mode", ["mutate", "validate"])
async def test_dangerous_objects_are_denied_with_the_policy_reason(handler: AdmissionHandler, doc: dict[str, Any], mode: str) -> None:
    result = await handler.handle(body(doc), mode=mode)  # type: ignore[arg-type]
    response = result.body["response"]
    assert result.status == 200 and response["allowed"] is False
    assert "patch" not in response
    expected_rule = doc["metadata"]["annotations"]["test.jovial-guard.io/expect"]
    assert response["status"]["code"] == 403
    assert f"[{expected_rule}]" in response["status"]["message"]


@pytest.mark.parametrize("doc", [d for d in load_documents(PSS / "workloads.yaml") if "ok" in d["metadata"]["name"]], ids=lambda d: d["kind"])
async def test_pod_template_kinds_get_rerooted_patches(handler: AdmissionHandler, doc: dict[str, Any]) -> None:
    result = await handler.handle(body(doc), mode="mutate")
    assert result.body["response"]["allowed"] is True
    ops = patch_of(result)
    template_path = {"CronJob": "/spec/jobTemplate/spec/template"}.get(doc["kind"], "/spec/template")
    assert ops and all(op["path"].startswith(template_path + "/spec/") for op in ops)
    patched = jsonpatch.apply_patch(doc, ops)
    assert (await handler.handle(body(patched), mode="validate")).body["response"]["allowed"] is True


async def test_update_is_decided_like_create(handler: AdmissionHandler) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="frank"))
    bad = json.loads(json.dumps(pod))
    bad["spec"]["containers"][0]["securityContext"]["privileged"] = True
    result = await handler.handle(body(bad, operation="UPDATE", old=pod), mode="validate")
    assert result.body["response"]["allowed"] is False
    assert "[pod-security/privileged]" in result.body["response"]["status"]["message"]


async def test_validate_refuses_an_unpatched_pod(handler: AdmissionHandler) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="gina"))
    response = (await handler.handle(body(pod), mode="validate")).body["response"]
    assert response["allowed"] is False and f"[{NOT_HARDENED}]" in response["status"]["message"]


async def test_dry_run_is_decided_without_side_effects(engine: PolicyEngine) -> None:
    logged: list[str] = []
    handler = AdmissionHandler(engine, decision_log=lambda w, d, m, s: logged.append(w.name))
    pod = as_api_server_sends(await kubespawner_pod(username="hana"))
    dry = await handler.handle(body(pod, dry_run=True), mode="mutate")
    real = await handler.handle(body(pod), mode="mutate")
    assert dry.body["response"]["allowed"] is True
    assert dry.body["response"]["patch"] == real.body["response"]["patch"]
    assert logged == [pod["metadata"]["name"]]  # only the real request was logged


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}},
    ],
)
async def test_kinds_without_pod_template_are_denied_by_default(engine: PolicyEngine, obj: dict[str, Any]) -> None:
    strict = AdmissionHandler(engine)
    response = (await strict.handle(body(obj), mode="validate")).body["response"]
    assert response["allowed"] is False and f"[{UNSUPPORTED_KIND}]" in response["status"]["message"]
    lenient = AdmissionHandler(engine, settings=AdmissionSettings(allow_unsupported_kinds=True))
    response = (await lenient.handle(body(obj), mode="validate")).body["response"]
    assert response["allowed"] is True and "patch" not in response


async def test_kind_mismatch_between_request_and_object_is_denied(engine: PolicyEngine) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="ivan"))
    review = admission_review(pod)
    review["request"]["kind"]["kind"] = "Deployment"
    result = await AdmissionHandler(engine, settings=AdmissionSettings(allow_unsupported_kinds=True)).handle(json.dumps(review).encode(), mode="mutate")
    assert result.body["response"]["allowed"] is False


async def test_malformed_object_in_a_good_envelope_is_denied_in_band(handler: AdmissionHandler) -> None:
    review = admission_review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}})
    result = await handler.handle(json.dumps(review).encode(), mode="mutate")
    assert result.status == 200
    assert result.body["response"]["allowed"] is False and result.body["response"]["status"]["code"] == 400


@pytest.mark.parametrize("raw", [b"", b"null", b"{}", b"[1]", b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}'])
async def test_bad_bodies_get_400_with_a_reason(handler: AdmissionHandler, raw: bytes) -> None:
    result = await handler.handle(raw, mode="validate")
    assert result.status == 400 and result.body["allowed"] is False and result.body["reason"]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback listener that accepts and never answers: a hung OPA."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_deadline_past_means_deny(black_hole: int) -> None:
    async with OpaConnection(OpaEndpoint(f"http://127.0.0.1:{black_hole}"), timeout=30) as conn:
        handler = AdmissionHandler(PolicyEngine(conn, deadline=30), settings=AdmissionSettings(deadline=0.3))
        pod = as_api_server_sends(await kubespawner_pod(username="jon"))
        result = await handler.handle(body(pod), mode="mutate")
    response = result.body["response"]
    assert response["allowed"] is False and response["status"]["code"] == 503
    assert "deadline" in response["status"]["message"]


async def test_opa_killed_means_deny_and_nothing_cached() -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=1.0) as conn:
            cache: DecisionCache[Any] = DecisionCache()
            handler = AdmissionHandler(PolicyEngine(conn, deadline=1.0), cache=cache)
            pods = [as_api_server_sends(await kubespawner_pod(username=f"k{i}")) for i in range(2)]
            assert (await handler.handle(body(pods[0]), mode="mutate")).body["response"]["allowed"] is True
            opa.kill()
            handler.revisions.observe(None, error="killed")  # what the poller reports
            for pod in pods:  # the cached allow is not served once OPA is gone
                response = (await handler.handle(body(pod), mode="mutate")).body["response"]
                assert response["allowed"] is False
                assert f"[{ENGINE_UNAVAILABLE}]" in response["status"]["message"]
            assert len(cache) == 0


async def test_cache_hits_and_is_invalidated_by_a_policy_change(tmp_path: Any) -> None:
    """A real policy change in a real OPA: the cached allow must not survive it."""
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=2.0) as conn:
            engine = PolicyEngine(conn, deadline=2.0)
            cache: DecisionCache[Any] = DecisionCache()
            handler = AdmissionHandler(engine, cache=cache)
            handler.revisions.observe(await engine.revision())
            pod = as_api_server_sends(await kubespawner_pod(username="lena"))
            first = await handler.handle(body(pod), mode="mutate")
            second = await handler.handle(body(pod), mode="mutate")
            assert first.cache == "miss" and second.cache == "hit"
            assert second.body["response"]["allowed"] is True
            assert second.body["response"]["patch"] == first.body["response"]["patch"]

            # The admin withdraws the image registry and bumps the revision.
            prefixes = ["localhost/jovial-guard/"]
            requests.put(f"{opa.url}/v1/data/settings/images/allowed_prefixes", json=prefixes, timeout=5).raise_for_status()
            requests.put(f"{opa.url}/v1/data/jovial_guard_meta/revision", json="sha256:changed", timeout=5).raise_for_status()
            handler.revisions.observe(await engine.revision())  # one poll
            third = await handler.handle(body(pod), mode="mutate")
            assert third.cache == "miss"
            assert third.body["response"]["allowed"] is False
            assert third.body["response"]["auditAnnotations"]["policy-revision"] == "sha256:changed"


async def test_a_decision_with_a_new_revision_invalidates_immediately(tmp_path: Any) -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=2.0) as conn:
            engine = PolicyEngine(conn, deadline=2.0)
            cache: DecisionCache[Any] = DecisionCache()
            handler = AdmissionHandler(engine, cache=cache)
            a = as_api_server_sends(await kubespawner_pod(username="mia"))
            b = as_api_server_sends(await kubespawner_pod(username="max"))
            await handler.handle(body(a), mode="mutate")
            assert len(cache) == 1
            requests.put(f"{opa.url}/v1/data/jovial_guard_meta/revision", json="sha256:other", timeout=5).raise_for_status()
            await handler.handle(body(b), mode="mutate")  # answered with the new revision
            assert cache.revision == "sha256:other" and len(cache) == 1
            assert (await handler.handle(body(a), mode="mutate")).cache == "miss"


async def test_identical_concurrent_requests_ask_opa_once(opa_connection: OpaConnection) -> None:
    asked: list[str] = []
    engine = PolicyEngine(opa_connection, deadline=5.0, listeners=[lambda w, d, s: asked.append(w.name)])
    handler = AdmissionHandler(engine, cache=DecisionCache())
    pods = [as_api_server_sends(await kubespawner_pod(username=f"storm{i}")) for i in range(3)]
    bodies = [body(pods[i % 3]) for i in range(30)]
    results = await asyncio.gather(*(handler.handle(b, mode="mutate") for b in bodies))
    assert all(r.body["response"]["allowed"] is True for r in results)
    assert sorted(asked) == sorted(p["metadata"]["name"] for p in pods)  # one OPA question per distinct pod
    assert len({r.body["response"]["uid"] for r in results}) == 30  # each answer echoes its own uid
    assert all(r.body["response"]["patch"] for r in results)


async def test_pod_update_patches_only_new_ephemeral_containers(handler: AdmissionHandler) -> None:
    """A stored pod's spec is immutable: an UPDATE (labels, finalizers) gets no patch, and
    a debug container added through pods/ephemeralcontainers is hardened."""
    legacy = as_api_server_sends(await kubespawner_pod(username="uma"))  # stored before the webhook existed
    relabelled = json.loads(json.dumps(legacy))
    relabelled["metadata"]["labels"]["extra"] = "yes"
    for mode in ("mutate", "validate"):
        response = (await handler.handle(body(relabelled, operation="UPDATE", old=legacy), mode=mode)).body["response"]  # type: ignore[arg-type]
        assert response["allowed"] is True and "patch" not in response

    debug = json.loads(json.dumps(relabelled))
    debug["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "quay.io/jupyter/base-notebook:2024-05-27"}]
    result = await handler.handle(body(debug, operation="UPDATE", old=relabelled), mode="mutate")
    ops = patch_of(result)
    assert ops and all(op["path"].startswith("/spec/ephemeralContainers/0/") for op in ops)
    patched = jsonpatch.apply_patch(debug, ops)
    assert patched["spec"]["ephemeralContainers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert (await handler.handle(body(patched, operation="UPDATE", old=relabelled), mode="validate")).body["response"]["allowed"] is True
    assert (await handler.handle(body(debug, operation="UPDATE", old=relabelled), mode="validate")).body["response"]["allowed"] is False

    evil = json.loads(json.dumps(relabelled))
    evil["spec"]["ephemeralContainers"] = [{"name": "root", "image": "quay.io/jupyter/base-notebook:2024-05-27", "securityContext": {"privileged": True}}]
    response = (await handler.handle(body(evil, operation="UPDATE", old=relabelled), mode="mutate")).body["response"]
    assert response["allowed"] is False and "[pod-security/privileged]" in response["status"]["message"]
