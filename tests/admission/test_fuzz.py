"""Thousands of malformed and adversarial AdmissionReviews: no crash, no accidental allow.

Three families, each run against the real OPA:

* garbage: arbitrary bytes and arbitrary JSON -> HTTP 400 or an in-band denial;
* adversarial: dangerous pods (every Pod Security violation fixture) wrapped in any
  pod-template kind, with random noise added everywhere else (labels, annotations claiming
  admin and groups, extra containers, odd operations, dryRun) -> never allowed;
* corrupted: a good KubeSpawner review with one field replaced by junk -> a well-formed
  answer whose uid echoes the request; an allow carries a patch that applies.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jovial_guard.admission.cache import DecisionCache
from jovial_guard.admission.handler import AdmissionHandler, HandlerResult
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import ManagedOpa
from tests.conftest import FIXTURES, load_documents

from .kubespawner_pods import (
    admission_review,
    as_api_server_sends,
    kubespawner_pod_sync,
)

FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)

DANGEROUS = [
    d for name in ("baseline-violations.yaml", "restricted-violations.yaml") for d in load_documents(FIXTURES / "pss" / name)
]
GOOD_POD = as_api_server_sends(kubespawner_pod_sync(username="fuzz", groups=("astro",)))
TEMPLATE_KINDS = [("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("apps/v1", "ReplicaSet"),
                  ("batch/v1", "Job"), ("batch/v1", "CronJob"), ("v1", "ReplicationController"), ("v1", "PodTemplate")]


class LoopHandler:
    """An AdmissionHandler with its own event loop and OPA connection, for sync hypothesis tests."""

    def __init__(self, opa_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection = OpaConnection(OpaEndpoint(opa_url), timeout=5.0)
        self.loop.run_until_complete(self.connection.__aenter__())
        self.handler = AdmissionHandler(PolicyEngine(self.connection, deadline=5.0), cache=DecisionCache())
        self.engine_failures = 0

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())
        self.loop.close()


@pytest.fixture(scope="module")
def handler(opa: ManagedOpa) -> Iterator[LoopHandler]:
    runner = LoopHandler(opa.url)
    try:
        yield runner
    finally:
        # The denials above must be the policy's, not a dead OPA connection's.
        assert runner.engine_failures == 0
        runner.close()


def run(handler: LoopHandler, raw: bytes, mode: str) -> HandlerResult:
    result = handler.loop.run_until_complete(handler.handler.handle(raw, mode=mode))  # type: ignore[arg-type]
    text = json.dumps(result.body)
    # OPA refusing junk input (HTTP 400) or answering a spec that does not parse is a
    # legitimate fail-closed denial; an unreachable OPA would make every denial vacuous.
    if "is unreachable" in text or "did not answer within" in text or "deadline" in text:
        handler.engine_failures += 1
    return result


def check_shape(result: HandlerResult, sent: Any) -> None:
    assert result.status in (200, 400)
    json.dumps(result.body)  # serializable
    if result.status == 400:
        assert result.body["allowed"] is False and result.body["reason"]
        return
    response = result.body["response"]
    assert result.body["apiVersion"] == "admission.k8s.io/v1" and result.body["kind"] == "AdmissionReview"
    assert response["uid"] == sent["request"]["uid"]
    assert response["allowed"] in (True, False)
    if not response["allowed"]:
        assert response["status"]["message"] and "patch" not in response


def wrap(pod: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    template = {"metadata": pod.get("metadata", {}), "spec": pod["spec"]}
    if kind == "Pod":
        return pod
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "PodTemplate":
        return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "t"}, "template": template}
    else:
        spec = {"selector": {"matchLabels": {"a": "b"}}, "template": template}
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}, "spec": spec}


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), json_value.map(lambda v: json.dumps(v).encode())), mode=st.sampled_from(["validate", "mutate"]))
def test_garbage_is_400_or_denied(handler: LoopHandler, raw: bytes, mode: str) -> None:
    result = run(handler, raw, mode)
    assert result.status in (200, 400)
    if result.status == 200:
        assert result.body["response"]["allowed"] is False


@FUZZ
@given(
    base=st.sampled_from(DANGEROUS),
    kind=st.sampled_from([("v1", "Pod")] + TEMPLATE_KINDS),
    noise_labels=st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=12), max_size=3),
    claims=st.fixed_dictionaries({}, optional={
        "jovial-guard.io/admin": st.sampled_from(["true", "True", "1"]),
        "jovial-guard.io/groups": st.sampled_from(["staff", "admin,staff", '["gpu-users","staff"]', "*"]),
        "jovial-guard.io/profile": st.sampled_from(["default", "gpu", "large-memory", "../../etc"]),
        "hub.jupyter.org/username": st.sampled_from(["root", "admin", "alice"]),
    }),
    extra_container=st.booleans(),
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", "create", ""]),
    dry_run=st.booleans(),
    mode=st.sampled_from(["validate", "mutate"]),
)
def test_dangerous_objects_are_never_allowed(
    handler: LoopHandler, base: dict[str, Any], kind: tuple[str, str], noise_labels: dict[str, str],
    claims: dict[str, str], extra_container: bool, operation: str, dry_run: bool, mode: str,
) -> None:
    pod = copy.deepcopy(base)
    metadata = pod.setdefault("metadata", {})
    metadata.setdefault("labels", {}).update(noise_labels)
    metadata.setdefault("annotations", {}).update(claims)
    if extra_container:
        pod["spec"]["containers"].append({"name": "sidecar", "image": "quay.io/jupyter/base-notebook:2024-05-27"})
    obj = wrap(pod, *kind)
    review = admission_review(obj, operation=operation, dry_run=dry_run)
    result = run(handler, json.dumps(review).encode(), mode)
    check_shape(result, review)
    assert result.status == 200
    assert result.body["response"]["allowed"] is False, result.body


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, prefix + (index,))
    return out


GOOD_REVIEW = admission_review(GOOD_POD, uid="fixed-uid")
PATHS = [p for p in _paths(GOOD_REVIEW) if p and p != ("request", "uid")]


@FUZZ
@given(path=st.sampled_from(PATHS), junk=json_value, mode=st.sampled_from(["validate", "mutate"]))
def test_corrupted_reviews_answer_well_formed(handler: LoopHandler, path: tuple[Any, ...], junk: Any, mode: str) -> None:
    review = copy.deepcopy(GOOD_REVIEW)
    node: Any = review
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = junk
    result = run(handler, json.dumps(review).encode(), mode)
    check_shape(result, review)
    if result.status == 200 and result.body["response"]["allowed"] and "patch" in result.body["response"]:
        ops = json.loads(base64.b64decode(result.body["response"]["patch"]))
        jsonpatch.apply_patch(review["request"]["object"], ops)  # the patch fits the object
