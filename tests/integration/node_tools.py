"""Where the single-node cluster's binaries are: the checkout's .tools/bin, then the cache.

The set-up steps in scripts/test.d/ (5x-*.sh) build them once per version and link them into
.tools/bin; ``JOVIAL_GUARD_<NAME>`` (e.g. JOVIAL_GUARD_KUBELET) overrides one binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jovial_guard.paths import cache_dir
from jovial_guard.policy.opa_process import REPO_ROOT

KUBE_VERSION = "v1.37.2"
CONTAINERD_VERSION = "v2.4.2"

#: name -> (the set-up step that provides it, its path under the cache's tools/)
BUILT = {
    "kube-apiserver": ("scripts/test.d/50-kube-apiserver.sh", f"kube-apiserver/{KUBE_VERSION}/kube-apiserver"),
    "kubelet": ("scripts/test.d/51-kubelet.sh", f"kubelet/{KUBE_VERSION}/kubelet"),
    "kube-scheduler": ("scripts/test.d/52-kube-scheduler.sh", f"kube-scheduler/{KUBE_VERSION}/kube-scheduler"),
    "kube-controller-manager": ("scripts/test.d/53-kube-controller-manager.sh",
                                f"kube-controller-manager/{KUBE_VERSION}/kube-controller-manager"),
    "containerd": ("scripts/test.d/54-containerd.sh", f"containerd/{CONTAINERD_VERSION}/bin/containerd"),
    "containerd-shim-runc-v2": ("scripts/test.d/54-containerd.sh",
                                f"containerd/{CONTAINERD_VERSION}/bin/containerd-shim-runc-v2"),
    "ctr": ("scripts/test.d/54-containerd.sh", f"containerd/{CONTAINERD_VERSION}/bin/ctr"),
}
#: Debian packages: name -> (absolute path, package)
SYSTEM = {
    "etcd": ("/usr/bin/etcd", "etcd-server"),
    "runc": ("/usr/sbin/runc", "runc"),
    "bridge": ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    "host-local": ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    "loopback": ("/usr/lib/cni/loopback", "containernetworking-plugins"),
}
CNI_BIN_DIR = "/usr/lib/cni"


def find_tool(name: str) -> str | None:
    """The binary's path, or None when neither the override, .tools/bin nor the cache has it."""
    env = os.environ.get("JOVIAL_GUARD_" + name.upper().replace("-", "_"), "")
    candidates = [env, str(REPO_ROOT / ".tools" / "bin" / name)]
    if name in BUILT:
        candidates.append(str(cache_dir() / "tools" / BUILT[name][1]))
    if name in SYSTEM:
        candidates.append(SYSTEM[name][0])
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name) if name in SYSTEM else None


def missing_tools() -> list[str]:
    """What the node cluster lacks, each with the step that provides it (empty when complete)."""
    missing = []
    for name, (step, _) in BUILT.items():
        if find_tool(name) is None:
            missing.append(f"{name} (run {step}; ./guard test does)")
    for name, (_, package) in SYSTEM.items():
        if find_tool(name) is None:
            missing.append(f"{name} (Debian package {package}: scripts/install-system.sh test)")
    return missing


def tool(name: str) -> str:
    """The binary's path; a clear error when it is missing."""
    found = find_tool(name)
    if found is None:
        raise FileNotFoundError(f"{name} is missing: " + "; ".join(m for m in missing_tools() if m.startswith(name)))
    return found


def tool_dir(name: str) -> Path:
    return Path(tool(name)).resolve().parent


def require_node() -> None:
    """For a node test module's top level: skipped only when ``JOVIAL_GUARD_SKIP_KUBE_NODE=1``
    says so; a missing tool or a non-root run fails the module, naming what is missing."""
    if os.environ.get("JOVIAL_GUARD_SKIP_KUBE_NODE") == "1":
        pytest.skip("JOVIAL_GUARD_SKIP_KUBE_NODE=1: the node tests were switched off explicitly", allow_module_level=True)
    missing = missing_tools()
    if missing:
        pytest.fail("the single-node cluster is incomplete: " + "; ".join(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the single-node cluster needs root (bridges, mounts, cgroups)", pytrace=False)
