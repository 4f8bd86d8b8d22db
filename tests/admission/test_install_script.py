"""deploy/install.sh, run with recording stand-ins for kubectl and helm.

The hub identity comes from policies/data.json (one setting) and reaches the chart as
hub.namespace / hub.serviceAccount; a namespace argument that disagrees is refused before
anything is applied; the hub namespace gets the label the webhooks' namespaceSelector follows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >>"$CALLS"
case "$*" in
  *"-o yaml"*) echo "kind: Stub" ;;
esac
[ -t 0 ] || cat >/dev/null
exit 0
"""


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "deploy", root / "deploy")
    (root / "policies").mkdir()
    shutil.copy(REPO / "policies" / "data.json", root / "policies" / "data.json")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kubectl", "helm"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    return root


def run(checkout: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = checkout.parent / "calls.log"
    env = {**os.environ, "PATH": f"{checkout.parent / 'bin'}:{os.environ['PATH']}", "CALLS": str(calls)}
    proc = subprocess.run(["bash", str(checkout / "deploy" / "install.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    return proc, calls.read_text().splitlines() if calls.exists() else []


def helm_call(calls: list[str]) -> str:
    (call,) = [c for c in calls if c.startswith("helm ")]
    return call


def test_install_uses_the_hub_identity_from_the_policy_data(checkout: Path) -> None:
    proc, calls = run(checkout)
    assert proc.returncode == 0, proc.stderr
    assert "system:serviceaccount:jhub:hub" in proc.stdout
    assert "kubectl label namespace jhub jovial-guard.io/guarded=true --overwrite" in calls
    helm = helm_call(calls)
    assert helm.startswith("helm upgrade --install jovial-guard ") and "/deploy/helm/jovial-guard " in helm
    assert "--set hub.namespace=jhub --set hub.serviceAccount=hub" in helm and "--wait" in helm
    assert calls.index(helm) == len(calls) - 1  # the namespace is labelled before the chart goes in
    assert not any("metadata.name" in c for c in calls)  # the selector is a label, not a name


def test_install_follows_an_edited_setting_and_passes_extra_helm_arguments(checkout: Path) -> None:
    data = checkout / "policies" / "data.json"
    data.write_text(data.read_text().replace('"namespace": "jhub"', '"namespace": "hub-prod"'))
    proc, calls = run(checkout, "hub-prod", "-f", "mine.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "kubectl label namespace hub-prod jovial-guard.io/guarded=true --overwrite" in calls
    assert helm_call(calls).endswith("--set hub.namespace=hub-prod --set hub.serviceAccount=hub --wait --timeout 10m -f mine.yaml")


def test_install_refuses_a_namespace_the_policy_does_not_trust(checkout: Path) -> None:
    proc, calls = run(checkout, "other")
    assert proc.returncode == 2
    assert "settings.hub.namespace" in proc.stderr and "system:serviceaccount:jhub:hub" in proc.stderr
    assert calls == []  # nothing applied
