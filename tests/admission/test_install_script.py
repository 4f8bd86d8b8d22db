"""deploy/install.sh, run with recording stand-ins for kubectl and jovial-guard.

The hub identity comes from policies/data.json (one setting); a namespace argument that
disagrees is refused before anything is applied; the hub namespace gets the label the
webhooks' namespaceSelector follows.
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
  "webhook certs"*) mkdir -p "$3"; echo "ca" >"$3/ca.crt" ;;
  "webhook netpol"*) echo "# rendered" ;;
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
    for tool in ("kubectl", "jovial-guard"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    return root


def run(checkout: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = checkout.parent / "calls.log"
    env = {**os.environ, "PATH": f"{checkout.parent / 'bin'}:{os.environ['PATH']}", "CALLS": str(calls),
           "JOVIAL_GUARD_CERT_DIR": str(checkout.parent / "certs")}
    proc = subprocess.run(["bash", str(checkout / "deploy" / "install.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    return proc, calls.read_text().splitlines() if calls.exists() else []


def test_install_uses_the_hub_identity_from_the_policy_data(checkout: Path) -> None:
    proc, calls = run(checkout)
    assert proc.returncode == 0, proc.stderr
    assert "system:serviceaccount:jhub:hub" in proc.stdout
    assert "kubectl label namespace jhub jovial-guard.io/guarded=true --overwrite" in calls
    assert any(c.startswith("jovial-guard webhook netpol") and c.endswith("--namespace jhub") for c in calls)
    assert not any("metadata.name" in c for c in calls)  # the selector is a label, not a name


def test_install_follows_an_edited_setting(checkout: Path) -> None:
    data = checkout / "policies" / "data.json"
    data.write_text(data.read_text().replace('"namespace": "jhub"', '"namespace": "hub-prod"'))
    proc, calls = run(checkout, "hub-prod")
    assert proc.returncode == 0, proc.stderr
    assert "kubectl label namespace hub-prod jovial-guard.io/guarded=true --overwrite" in calls


def test_install_refuses_a_namespace_the_policy_does_not_trust(checkout: Path) -> None:
    proc, calls = run(checkout, "other")
    assert proc.returncode == 2
    assert "settings.hub.namespace" in proc.stderr and "system:serviceaccount:jhub:hub" in proc.stderr
    assert calls == []  # nothing applied
