"""Write cases.yaml: AdmissionReviews for each class of admission problem, with the outcome
each must get (annotation test.jovial-guard.io/expect: "allowed" or the denying rule id).

Run from the repository root: python tests/vectors/policy-classes/generate.py
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

HUB = "system:serviceaccount:jhub:hub"
INTRUDER = "system:serviceaccount:jhub:default"
CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.2.0"


def pod(name: str, expect: str, *, notebook: bool = True, **spec: Any) -> dict[str, Any]:
    labels = {"component": "singleuser-server", "hub.jupyter.org/username": name} if notebook else {"app": "tools"}
    annotations = {"test.jovial-guard.io/expect": expect}
    if notebook:
        annotations |= {"hub.jupyter.org/username": name, "jovial-guard.io/groups": "[]"}
    container = {"name": "notebook" if notebook else "tool", "image": IMAGE,
                 "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}
    body = {"containers": [container], **spec}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"jupyter-{name}" if notebook else name, "labels": labels, "annotations": annotations},
            "spec": body}


def review(obj: dict[str, Any], user: str) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"uid-{obj['metadata']['name']}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "jhub",
        "operation": "CREATE", "userInfo": {"username": user, "groups": ["system:serviceaccounts"]},
        "object": obj, "dryRun": False}}


def with_container(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["spec"]["containers"][0].update(changes)
    return obj


def cases() -> list[dict[str, Any]]:
    out = []
    # The image allowlist matches at registry/repository boundaries; z2jh's image is allowed.
    out.append(review(pod("amy", "allowed"), HUB))
    out.append(review(with_container(pod("ben", "images/not-allowed"), image="registry.k8s.io/pause-but-not-really/x:1"), HUB))
    # Every accelerator is counted.
    for name, resource in (("cat", "amd.com/gpu"), ("dan", "nvidia.com/mig-1g.5gb"), ("eve", "gpu.intel.com/i915")):
        out.append(review(with_container(pod(name, "resources/gpu"), resources={"limits": {"cpu": "1", "memory": "2Gi", resource: "1"}}), HUB))
    out.append(review(pod("fay", "resources/dra", resourceClaims=[{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]), HUB))
    # Pod Security v1.37.
    out.append(review(with_container(pod("gus", "pod-security/probe-host"), livenessProbe={"httpGet": {"host": "169.254.169.254", "port": 80}}), HUB))
    out.append(review(pod("hal", "allowed", securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]}), HUB))
    out.append(review(pod("ivy", "allowed", volumes=[{"name": "data", "image": {"reference": "quay.io/jupyter/data:1"}}]), HUB))
    apparmor = pod("jan", "allowed")
    apparmor["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/notebook"] = ""
    out.append(review(apparmor, HUB))
    userns = with_container(pod("userns-tool", "allowed", notebook=False, hostUsers=False), securityContext={"runAsUser": 0})
    out.append(review(userns, CONTROLLER))
    out.append(review(with_container(pod("kim", "pod-security/run-as-root", hostUsers=False), securityContext={"runAsUser": 0}), HUB))
    # Identity that cannot be borrowed.
    out.append(review(pod("hub-borrower", "identity/hub-service-account", notebook=False, serviceAccountName="hub"), INTRUDER))
    hub_label = pod("hub-lookalike", "identity/hub-labels", notebook=False)
    hub_label["metadata"]["labels"] = {"component": "hub", "app": "jupyterhub"}
    out.append(review(hub_label, INTRUDER))
    egress = pod("egress-borrower", "identity/egress-labels", notebook=False)
    egress["metadata"]["labels"]["egress.jovial-guard.io/astro"] = "allow"
    out.append(review(egress, INTRUDER))
    access = pod("proxy-api-borrower", "identity/hub-labels", notebook=False)
    access["metadata"]["labels"]["hub.jupyter.org/network-access-proxy-api"] = "true"
    out.append(review(access, INTRUDER))
    claims = pod("claimer", "identity/hub-labels", notebook=False)
    claims["metadata"]["annotations"]["jovial-guard.io/groups"] = '["gpu-users"]'
    out.append(review(claims, INTRUDER))
    # Platform pods: no notebook-only rules (a writable root is fine, no profile needed).
    platform = with_container(pod("proxy-like", "allowed", notebook=False), securityContext={"readOnlyRootFilesystem": False})
    out.append(review(platform, CONTROLLER))
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("cases.yaml")
    path.write_text(yaml.safe_dump_all(cases(), sort_keys=False))
    print(f"wrote {path}")
