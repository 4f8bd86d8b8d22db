"""The project's Helm chart (deploy/helm/jovial-guard), rendered by a real helm, as test input.

:func:`render` runs ``helm template`` with named value sets (:data:`VALUE_SETS`) and returns
the objects; results are cached per value set, so a test module renders each once.
"""

from __future__ import annotations

import base64
import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jovial_guard.policy.opa_process import REPO_ROOT

from .z2jh_chart import KUBE_VERSION, find_helm

CHART = REPO_ROOT / "deploy" / "helm" / "jovial-guard"
RELEASE = "jovial-guard"
NAMESPACE = "jovial-guard"
# A P-256 public key (PEM) standing in for a policy store's signing.pub, and its key id.
BUNDLE_PUBLIC_KEY = Path(__file__).with_name("bundle-signing.pub")
BUNDLE_KEY_ID = "jovial-guard-policy-1"
VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "cert-manager+servicemonitor": ["--set", "tls.certManager.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"],
    "egress-peers": ["--set", "networkPolicy.egress.auditService.enabled=true", "--set", "networkPolicy.egress.bundleService.enabled=true",
                     "--set", "webhook.decisionLog.enabled=true", "--set", "podAntiAffinity=hard"],
    "bundles+cluster-audit+namespace-modes": [
        "--set", "policy.bundles.enabled=true", "--set-file", f"policy.publicKey={BUNDLE_PUBLIC_KEY}",
        "--set", f"policy.keyId={BUNDLE_KEY_ID}", "--set", "auditCluster.enabled=true",
        "--set", "auditCluster.serviceMonitor.enabled=true", "--set", "namespaceModes.enabled=true"],
}


def helm() -> str:
    """The cached helm; a missing build fails the test (it must not turn into a green skip)."""
    found = find_helm()
    if found is None:
        pytest.fail("helm is not built: run scripts/test.d/60-helm.sh (./guard test does)", pytrace=False)
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def template(*extra: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """``helm template`` with extra arguments; raises with helm's message on failure."""
    proc = run_helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION, *extra)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def _rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(template(*VALUE_SETS[name]))


def render(name: str = "defaults") -> list[dict[str, Any]]:
    """A fresh copy of the objects for one of :data:`VALUE_SETS`."""
    import copy

    return copy.deepcopy(list(_rendered(name)))


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} {kind} named *{name_suffix}: {[d['metadata']['name'] for d in matches]}")
    return matches[0]


def hook_of(doc: dict[str, Any]) -> tuple[set[str], int] | None:
    """(hook events, weight) of a Helm hook object, or None for a release object."""
    annotations = doc["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return set(annotations["helm.sh/hook"].split(",")), int(annotations.get("helm.sh/hook-weight", "0"))


def loopback_configurations(port: int, ca_file: Path) -> list[dict[str, Any]]:
    """The chart's fail-closed configurations (mutating first, then validating) with
    ``clientConfig`` pointed at a webhook on the host's loopback, Helm's hook annotations
    dropped: what the API server e2e tests register."""
    docs = [d for d in render() if d["kind"].endswith("WebhookConfiguration") and not d["metadata"]["name"].endswith("-backstop")]
    docs.sort(key=lambda d: d["kind"] != "MutatingWebhookConfiguration")
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    for doc in docs:
        doc["metadata"].pop("annotations", None)
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
    return docs
