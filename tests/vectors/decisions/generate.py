"""Regenerate the decision corpus: every workload the tests and benchmarks give OPA, with
the decision the policy gave it when the corpus was recorded.

The corpus pins the policy's behaviour, not its wording in Rego: a rewrite of the Rego (for
speed, or a refactoring) must give every one of these inputs the very same decision
(allowed, reasons, warnings, exemptions, spec, mode). tests/unit/test_decision_corpus.py
re-evaluates it with the real opa against policies/.

Inputs, each normalized the way the project normalizes it (jovial_guard.normalize):
  * the Pod Security v1.37 conformance pods (tests/vectors/pod-security), as `check`;
  * the hostile documents and reviews (tests/vectors/hostile) that normalize at all;
  * the policy-class AdmissionReviews (tests/vectors/policy-classes/cases.yaml);
  * every pod template of zero-to-jupyterhub's chart rendered by helm (when helm is built);
  * KubeSpawner's own pods for several users and profiles (tests/admission/kubespawner_pods);
  * bench/check.py's pods, the bench's compliant/fixable/dangerous mix;
  * the deploy probes (jovial_guard.policy.probes) and spawn-hook workloads;
and derived cases: each pod also as a spawn, as an admission by the hub, by a stranger,
as an UPDATE that keeps or changes the owner's metadata, and as a metadata-only UPDATE.
Each case is decided twice: with policies/data.json, and with VARIANT settings that turn on
exemptions, enforcement modes and namespace labels, storage and egress entries.

    python tests/vectors/decisions/generate.py     # rewrites corpus.jsonl.gz

Run it only on a policy whose decisions you trust: it records, it does not check.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from jovial_guard.admission.update import classify, with_stored_object  # noqa: E402
from jovial_guard.documents import read_stream  # noqa: E402
from jovial_guard.errors import MalformedInput  # noqa: E402
from jovial_guard.normalize import workload_from_document  # noqa: E402
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa  # noqa: E402
from jovial_guard.policy.probes import KNOWN_BAD, KNOWN_GOOD  # noqa: E402
from jovial_guard.spawn.workload import spawn_workload  # noqa: E402
from tests.admission.kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.jsonl.gz"
VECTORS = REPO / "tests" / "vectors"
HUB_SA = "system:serviceaccount:jhub:hub"

# Settings that exercise what policies/data.json leaves empty.
VARIANT_PATCH: dict[str, Any] = {
    "exemptions": [
        {"id": "system-pods", "rules": ["pod-security/*"], "namespaces": ["kube-system"], "reason": "system daemons"},
        {"id": "ubuntu-latest", "rules": ["images/latest", "images/not-allowed"], "images": ["docker.io/library/"],
         "reason": "lab image", "expires": "2099-01-01T00:00:00Z"},
        {"id": "monitor", "rules": ["pod-security/host-namespaces", "pod-security/host-path"],
         "selector": {"app": "monitor"}, "reason": "node monitor"},
        {"id": "expired", "rules": ["pod-security/privileged"], "reason": "old", "expires": "2001-01-01T00:00:00Z"},
        {"id": "bad-expiry", "rules": ["resources/*"], "reason": "typo", "expires": "soon"},
        {"id": "installer", "rules": ["identity/*", "pod-security/capabilities"],
         "request_users": ["system:serviceaccount:jhub:installer"], "reason": "installer"},
        {"rules": ["*"], "reason": "no id: never applies"},
        {"id": "hub-ns", "rules": ["pod-security/run-as-root"], "namespaces": ["jhub"], "selector": {"component": "hub"},
         "reason": "hub"},
    ],
    "enforcement": {
        "default": "enforce",
        "modes": {"images/latest": "warn", "resources/*": "audit", "pod-security/volume-types": "off",
                  "profiles/*": "warn", "pod-security/seccomp": "bogus"},
        "locked": ["identity/*", "pod-security/privileged"],
    },
}
VARIANT_STORAGE_USERS = {"student001": {"fileset": "projects/special", "mode": "ro", "mount_name": "special"},
                         "amy": {"fileset": "../etc", "mode": "rw"}}
VARIANT_EGRESS = {"staff": [{"cidr": "192.0.2.0/24", "ports": [443]}, {"cidr": "10.213.250.0/24", "ports": [80, 443],
                                                                      "protocol": "tcp"}]}
NAMESPACE_LABELS = [
    {},
    {"jovial-guard.io/mode": "warn"},
    {"mode.jovial-guard.io/pod-security": "audit", "jovial-guard.io/mode": "enforce"},
    {"mode.jovial-guard.io/images.latest": "off", "mode.jovial-guard.io/images": "warn"},
    {"jovial-guard.io/mode": "off", "mode.jovial-guard.io/identity": "off"},
    {"jovial-guard.io/mode": "nonsense"},
]


def variant_settings() -> dict[str, Any]:
    settings: dict[str, Any] = json.loads((DEFAULT_POLICY_DIR / "data.json").read_text())["settings"]
    settings.update(copy.deepcopy(VARIANT_PATCH))
    settings["storage"]["users"] = VARIANT_STORAGE_USERS
    settings["egress"]["groups"] = {**settings["egress"]["groups"], **VARIANT_EGRESS}
    settings["resources"]["group_max"]["astro"] = {"cpu": "3", "memory": "6Gi", "gpu": 2, "dra_claims": 1}
    settings["images"]["allow_latest"] = False
    return settings


# -- base inputs ------------------------------------------------------------------------------

def _documents(path: Path) -> Iterator[Any]:
    for parsed in read_stream(path.read_bytes()):
        if parsed.error is None and parsed.body is not None:
            yield parsed.body


def _normalized(name: str, doc: Any) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(name, input, review or None) for a document that normalizes; nothing otherwise."""
    try:
        workload = workload_from_document(doc)
    except MalformedInput:
        return
    review = doc if isinstance(doc, dict) and doc.get("kind") == "AdmissionReview" else None
    if review is not None:
        request = review["request"]
        workload = with_stored_object(request, workload, classify(request, workload))
    yield name, workload.to_input(), review


def file_inputs() -> Iterator[tuple[str, dict[str, Any], Any]]:
    for path in sorted((VECTORS / "pod-security").rglob("*.yaml")):
        for doc in _documents(path):
            yield from _normalized(str(path.relative_to(VECTORS)), doc)
    for path in sorted((VECTORS / "hostile").rglob("*")):
        if path.suffix in (".yaml", ".json") and path.name != "index.json":
            for i, doc in enumerate(_documents(path)):
                yield from _normalized(f"{path.relative_to(VECTORS)}#{i}", doc)
    for i, doc in enumerate(_documents(VECTORS / "policy-classes" / "cases.yaml")):
        yield from _normalized(f"policy-classes#{i}", doc)


def z2jh_inputs() -> Iterator[tuple[str, dict[str, Any], Any]]:
    from tests.admission.z2jh_chart import RENDERINGS, find_helm, render

    helm = find_helm()
    if helm is None:
        raise SystemExit("helm is not built (scripts/test.d/60-helm.sh): the corpus needs z2jh's pods")
    for rendering in sorted(RENDERINGS):
        for doc in render(helm, rendering):
            name = f"z2jh/{rendering}/{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            yield from _normalized(name, doc)


async def _kubespawner_docs() -> list[tuple[str, dict[str, Any]]]:
    profiles = [("default", ()), ("large-memory", ("large-memory",)), ("default", ("astro",)), ("bare", ()),
                ("gpu", ("gpu-users",)), ("large-memory", ()), ("nonexistent", ("staff",)), ("default", ("staff", "astro"))]
    out = []
    for i, (profile, groups) in enumerate(profiles):
        pod = as_api_server_sends(await kubespawner_pod(username=f"student{i:03d}", groups=groups, profile=profile))
        out.append((f"kubespawner/{profile}/{'+'.join(groups) or '-'}", pod))
    return out


def bench_check_pods() -> Iterator[tuple[str, dict[str, Any]]]:
    sys.path.insert(0, str(REPO / "bench"))
    from bench.check import pods

    for i, pod in enumerate(pods(6)):
        yield f"bench-check/{i}", pod


def edge_pods() -> Iterator[tuple[str, dict[str, Any]]]:
    """Pods for the rules the vectors above reach rarely (resources, read-only root, ids)."""
    image = "quay.io/jupyter/scipy-notebook:2024-05-27"
    notebook = {"component": "singleuser-server"}
    containers: list[tuple[str, dict[str, Any]]] = [
        ("cpu-high", {"resources": {"limits": {"cpu": "8", "memory": "1Gi"}}}),
        ("cpu-number", {"resources": {"limits": {"cpu": 1.5, "memory": 1073741824}}}),
        ("cpu-malformed", {"resources": {"limits": {"cpu": "lots", "memory": "2Qi"}, "requests": {"cpu": "1x"}}}),
        ("gpu", {"resources": {"limits": {"nvidia.com/gpu": "2", "amd.com/gpu": 1},
                               "requests": {"nvidia.com/gpu": "1", "google.com/tpu": "x"}}}),
        ("writable-root", {"securityContext": {"readOnlyRootFilesystem": False, "runAsUser": 1.5,
                                               "runAsGroup": -1, "seccompProfile": {"type": "Unconfined"}}}),
        ("no-image", {"image": None}),
        ("digest", {"image": "quay.io/jupyter/base-notebook@sha256:" + "a" * 64}),
        ("port-registry", {"image": "localhost:5000/jovial-guard/notebook"}),
        ("hub-lookalike", {"image": "quay.io/jupyterhub-evil/x:1"}),
        ("probes", {"livenessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}},
                    "lifecycle": {"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 1}}}}),
        ("caps", {"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "NET_ADMIN"], "drop": ["ALL"]},
                                      "runAsNonRoot": False, "procMount": "Unmasked",
                                      "windowsOptions": {"hostProcess": True},
                                      "appArmorProfile": {"type": "Unconfined"},
                                      "seLinuxOptions": {"type": "spc_t", "user": "root"}}}),
    ]
    for name, extra in containers:
        container = {"name": "notebook", "image": image, **extra}
        if container["image"] is None:
            del container["image"]
        for labels in (notebook, {"app": "platform"}):
            kind = "notebook" if labels is notebook else "platform"
            yield f"edge/{name}/{kind}", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"p-{name}", "labels": labels,
                             "annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
                             if name == "caps" else {}},
                "spec": {"containers": [container],
                         "initContainers": [{"name": "init", "image": image, "resources": {"limits": {"cpu": "3"}}}],
                         "ephemeralContainers": [{"name": "debug", "image": "busybox",
                                                  "securityContext": {"readOnlyRootFilesystem": False}}],
                         "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                             "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "hostUsers": False,
                         "resourceClaims": [{"name": "gpu-claim"}],
                         "volumes": [{"name": "x", "hostPath": {"path": "/var"}}, {"name": "nfs", "nfs": {}}]}
                if name == "caps" else {"containers": [container]},
            }


def spawn_inputs() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "probe/good", KNOWN_GOOD.to_input()
    yield "probe/bad", KNOWN_BAD.to_input()
    cases = [
        ("amy", (), False, "localhost/jovial-guard/notebook:v1", "default", {}),
        ("bob", ("astro",), False, "localhost/jovial-guard/notebook:v1", "default", {"limits": {"cpu": "1"}}),
        ("carol", ("staff",), True, "quay.io/jupyter/scipy-notebook:2024-05-27", "large-memory", {}),
        ("dan", (), False, "quay.io/jupyter/scipy-notebook:latest", "large-memory", {}),
        ("eve@example.org", ("gpu-users", "astro"), False, "docker.io/library/ubuntu", "gpu",
         {"limits": {"nvidia.com/gpu": "2", "memory": "32Gi"}}),
        ("student001", ("astro",), False, "localhost/jovial-guard/notebook:v1", "", {"requests": {"cpu": "500m"}}),
    ]
    for name, groups, admin, image, profile, resources in cases:
        workload = spawn_workload(username=name, groups=groups, admin=admin, image=image,
                                  profile=profile or "default", resources=resources)
        yield f"spawn/{name}", workload.to_input()


def _with_labels(doc: dict[str, Any], labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    meta = doc.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    return doc


def review_variants(name: str, pod: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A pod as the API server would send it in several requests."""
    yield f"{name}@hub", admission_review(pod, username=HUB_SA, uid="u")
    yield f"{name}@stranger", admission_review(pod, username="mallory", uid="u", namespace="default")
    yield f"{name}@installer", admission_review(pod, username="system:serviceaccount:jhub:installer", uid="u")
    yield f"{name}@controller", admission_review(pod, username="system:serviceaccount:kube-system:replicaset-controller",
                                                 uid="u", namespace="kube-system")
    relabelled = _with_labels(pod, {"egress.jovial-guard.io/astro": "allow", "app": "monitor"},
                              {"container.apparmor.security.beta.kubernetes.io/x": "unconfined"})
    yield f"{name}@update-by-hub", admission_review(relabelled, username=HUB_SA, uid="u", operation="UPDATE", old=pod)
    yield f"{name}@update-by-stranger", admission_review(relabelled, username="mallory", uid="u", operation="UPDATE", old=pod)
    meta_only = _with_labels(pod, {"hub.jupyter.org/network-access-hub": "true", "component": "hub"},
                             {"hub.jupyter.org/username": "someone-else"})
    yield f"{name}@metadata-only", admission_review(meta_only, username="mallory", uid="u", operation="UPDATE", old=pod)
    yield f"{name}@metadata-only-hub", admission_review(meta_only, username=HUB_SA, uid="u", operation="UPDATE", old=pod)


def base_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, inp, _ in file_inputs():
        yield name, inp
    for name, inp, _ in z2jh_inputs():
        yield name, inp
    pods = asyncio.run(_kubespawner_docs()) + list(bench_check_pods()) + list(edge_pods())
    for name, pod in pods:
        for _, inp, _ in _normalized(name, pod):
            yield name, inp
        for review_name, review in review_variants(name, pod):
            for _, inp, _ in _normalized(review_name, review):
                yield review_name, inp
    yield from spawn_inputs()


def all_cases() -> list[dict[str, Any]]:
    cases = []
    seen: set[str] = set()
    for i, (name, inp) in enumerate(base_cases()):
        key = json.dumps(inp, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        cases.append({"name": name, "settings": "default", "input": inp})
        variant = copy.deepcopy(inp)
        variant["workload"]["namespace_labels"] = NAMESPACE_LABELS[i % len(NAMESPACE_LABELS)]
        cases.append({"name": name, "settings": "variant", "input": variant})
    return cases


# -- deciding with the real opa ---------------------------------------------------------------

# The `with` values are bound to variables first: `with input as c.input` would read c.input
# after input was replaced.
QUERY = """{i: d |
  some i, c in input.cases
  c.settings == "default"
  x := c.input
  d := data.jovial_guard.main.decision with input as x
} | {i: d |
  some i, c in input.cases
  c.settings == "variant"
  x := c.input
  v := input.variant
  d := data.jovial_guard.main.decision with input as x with data.settings as v
}"""


def decide(cases: list[dict[str, Any]], policy_dir: Path = DEFAULT_POLICY_DIR, opa: str | None = None) -> dict[int, Any]:
    """Each case's decision (a missing index: undefined), from one ``opa eval``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"cases": cases, "variant": variant_settings()}, f)
        f.flush()
        # Object union is not Rego; ask for both halves and merge here.
        out: dict[int, Any] = {}
        for half in QUERY.split(" | "):
            proc = subprocess.run([opa or find_opa(), "eval", "--format", "json", "-d", str(policy_dir),
                                   "-i", f.name, half], capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
            out.update({int(k): v for k, v in result.items()})
    return out


def main() -> int:
    cases = all_cases()
    decisions = decide(cases)
    lines = [json.dumps({**case, "decision": decisions.get(i)}, sort_keys=True) for i, case in enumerate(cases)]
    CORPUS.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    undefined = sum(1 for i in range(len(cases)) if i not in decisions)
    allowed = sum(1 for d in decisions.values() if d["allowed"])
    print(f"{CORPUS.relative_to(REPO)}: {len(cases)} cases, {allowed} allowed, "
          f"{len(decisions) - allowed} denied, {undefined} undefined")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
