"""Normalizers: every pod-template kind and AdmissionReviews in, Workloads out."""

from __future__ import annotations

from typing import Any

import pytest

from jovial_guard.errors import MalformedInput
from jovial_guard.normalize import POD_TEMPLATE_PATHS, workload_from_admission_review, workload_from_document, workload_from_object

POD_SPEC = {
    "initContainers": [{"name": "init", "image": "i:1"}],
    "containers": [{"name": "nb", "image": "n:1"}],
    "ephemeralContainers": [{"name": "dbg", "image": "d:1"}],
}
TEMPLATE = {"metadata": {"labels": {"a": "b"}, "annotations": {"hub.jupyter.org/username": "alice", "jovial-guard.io/groups": '["astro", "staff"]', "jovial-guard.io/profile": "gpu"}}, "spec": POD_SPEC}


def obj(kind: str) -> dict[str, Any]:
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "jhub", **TEMPLATE["metadata"]}, "spec": POD_SPEC}
    if kind == "CronJob":
        return {"kind": kind, "metadata": {"name": "x"}, "spec": {"jobTemplate": {"spec": {"template": TEMPLATE}}}}
    if kind == "PodTemplate":
        return {"kind": kind, "metadata": {"name": "x"}, "template": TEMPLATE}
    return {"kind": kind, "metadata": {"name": "x"}, "spec": {"template": TEMPLATE}}


@pytest.mark.parametrize("kind", sorted(POD_TEMPLATE_PATHS))
def test_every_kind_yields_all_containers(kind: str) -> None:
    workload = workload_from_object(obj(kind))
    assert workload.kind == kind
    assert workload.pod_path == POD_TEMPLATE_PATHS[kind]
    assert [(c.kind, c.name) for c in workload.containers()] == [
        ("containers", "nb"), ("initContainers", "init"), ("ephemeralContainers", "dbg")]
    assert workload.user is not None and workload.user.name == "alice"
    assert workload.user.groups == ("astro", "staff")
    assert workload.profile == "gpu"


def review(**request: Any) -> dict[str, Any]:
    base = {"uid": "u-1", "operation": "CREATE", "namespace": "jhub", "object": obj("Pod"),
            "userInfo": {"username": "system:serviceaccount:jhub:hub", "groups": ["system:serviceaccounts"]}}
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def test_admission_review() -> None:
    workload = workload_from_admission_review(review(dryRun=True, operation="UPDATE"))
    assert workload.origin == "admission" and workload.operation == "UPDATE" and workload.dry_run
    assert workload.request_user == "system:serviceaccount:jhub:hub"
    assert workload.namespace == "jhub"
    assert workload_from_document(review()).origin == "admission"


def test_digest_ignores_dry_run_but_not_content() -> None:
    a = workload_from_admission_review(review())
    b = workload_from_admission_review(review(dryRun=True))
    c = workload_from_admission_review(review(namespace="other"))
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "AdmissionReview",
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        review(uid=""),
        review(uid=None),
        review(object=None),
        review(operation="DELETE"),
        review(userInfo="root"),
        review(userInfo={"groups": "system:masters"}),
        review(object={"kind": "Pod", "metadata": {}}),
        review(object={"kind": "Pod", "spec": {"containers": []}}),
        review(object={"kind": "Pod", "spec": {"containers": "nb"}}),
        review(object={"kind": "Pod", "spec": {"containers": [{"name": "a"}], "volumes": {"x": 1}}}),
        review(object={"kind": "Pod", "spec": {"containers": [{"name": "a"}], "initContainers": ["x"]}}),
        review(object={"kind": "ConfigMap", "data": {}}),
        review(object={"kind": "Deployment", "spec": {}}),
        review(object={"kind": "Deployment", "spec": {"template": []}}),
        review(object={"kind": "Pod", "metadata": [], "spec": {"containers": [{"name": "a"}]}}),
        review(object={"kind": "Pod", "metadata": {"annotations": {"jovial-guard.io/groups": "[1, 2]"}}, "spec": {"containers": [{"name": "a"}]}}),
        review(object={"kind": "Pod", "metadata": {"annotations": {"jovial-guard.io/groups": "[nope"}}, "spec": {"containers": [{"name": "a"}]}}),
        review(object={"kind": "Pod", "metadata": {"annotations": "x"}, "spec": {"containers": [{"name": "a"}]}}),
    ],
)
def test_malformed_reviews_raise(bad: Any) -> None:
    with pytest.raises(MalformedInput):
        workload_from_document(bad)


@pytest.mark.parametrize("kind", ["Service", "ConfigMap", "Namespace", "List"])
def test_kinds_without_a_pod_template_are_named(kind: str) -> None:
    from jovial_guard.normalize import NoPodTemplate

    with pytest.raises(NoPodTemplate) as err:
        workload_from_object({"kind": kind, "metadata": {"name": "x"}})
    assert err.value.kind == kind
    assert isinstance(err.value, MalformedInput)  # callers that decide only pods still refuse it


BOOL_PLACES: list[tuple[str, Any]] = [
    ("/spec/hostNetwork", lambda s, v: s.update(hostNetwork=v)),
    ("/spec/hostPID", lambda s, v: s.update(hostPID=v)),
    ("/spec/hostUsers", lambda s, v: s.update(hostUsers=v)),
    ("/spec/securityContext/runAsNonRoot", lambda s, v: s.update(securityContext={"runAsNonRoot": v})),
    ("/spec/containers/0/securityContext/privileged", lambda s, v: s["containers"][0].update(securityContext={"privileged": v})),
    ("/spec/initContainers/0/securityContext/allowPrivilegeEscalation",
     lambda s, v: s["initContainers"][0].update(securityContext={"allowPrivilegeEscalation": v})),
    ("/spec/ephemeralContainers/0/securityContext/windowsOptions/hostProcess",
     lambda s, v: s["ephemeralContainers"][0].update(securityContext={"windowsOptions": {"hostProcess": v}})),
    ("/spec/containers/0/volumeMounts/0/readOnly", lambda s, v: s["containers"][0].update(volumeMounts=[{"name": "v", "mountPath": "/v", "readOnly": v}])),
    ("/spec/volumes/0/secret/optional", lambda s, v: s.update(volumes=[{"name": "v", "secret": {"secretName": "s", "optional": v}}])),
]


@pytest.mark.parametrize("where, place", BOOL_PLACES, ids=[w for w, _ in BOOL_PLACES])
@pytest.mark.parametrize("value", ["y", "true", 1, 0, [True], {"on": True}])
def test_a_non_bool_where_kubernetes_has_a_bool_is_malformed(where: str, place: Any, value: Any) -> None:
    import copy

    pod = copy.deepcopy(obj("Pod"))
    place(pod["spec"], value)
    with pytest.raises(MalformedInput) as err:
        workload_from_object(pod)
    assert f"{where} must be true or false" in str(err.value)


@pytest.mark.parametrize("where, place", BOOL_PLACES, ids=[w for w, _ in BOOL_PLACES])
@pytest.mark.parametrize("value", [True, False, None])
def test_bools_and_null_are_accepted(where: str, place: Any, value: Any) -> None:
    import copy

    pod = copy.deepcopy(obj("Pod"))
    place(pod["spec"], value)
    workload_from_object(pod)


def test_comma_joined_groups_are_refused_not_split() -> None:
    """Groups travel as a JSON list; "admin,staff" could be one group named with a comma."""
    doc = {"kind": "Pod", "metadata": {"annotations": {"hub.jupyter.org/username": "alice",
                                                        "jovial-guard.io/groups": "admin,staff"}},
           "spec": {"containers": [{"name": "a", "image": "x"}]}}
    with pytest.raises(MalformedInput, match="JSON list"):
        workload_from_object(doc)
