"""``jovial-guard node-agent``: mistakes are one line and exit 2; no JupyterHub is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    return subprocess.run([sys.executable, "-m", "jovial_guard", "node-agent", *args], capture_output=True,
                          text=True, timeout=60, check=False, env={**base, **(env or {})})


def test_outside_a_cluster_without_kubeconfig_is_a_mistake(tmp_path: Path) -> None:
    result = agent("--node-name", "n1", "--kubelet-root", str(tmp_path), "--once")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "jovial-guard node-agent: no Kubernetes API configuration (Service host/port is not set.): "
        "run in a pod or give --kubeconfig"]
    assert not (tmp_path / "seccomp").exists()


def test_an_empty_profiles_dir_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = agent("--node-name", "n1", "--kubelet-root", str(tmp_path / "k"), "--profiles-dir", str(tmp_path), "--once")
    assert result.returncode == 2
    assert "no seccomp profiles (*.json)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "k").exists()


def test_node_name_is_required() -> None:
    result = agent("--once", env={"NODE_NAME": ""})
    assert result.returncode == 2 and "--node-name" in result.stderr


def test_the_agent_imports_no_jupyterhub() -> None:
    code = ("import sys; import jovial_guard.node.cli, jovial_guard.node.agent; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jupyterhub', 'kubespawner', 'tornado')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"
