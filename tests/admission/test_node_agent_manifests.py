"""deploy/node-agent/: the node agent's manifests against the Kubernetes schema, and what they
grant: one hostPath (the kubelet's seccomp directory), no capabilities, node get/patch only;
both DaemonSets' readiness is the agent's own status check, run as an exec probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .k8s_schema import validation_errors

NODE_AGENT = Path(__file__).resolve().parents[2] / "deploy" / "node-agent"


def docs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(NODE_AGENT.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in docs() if d["kind"] == kind]


@pytest.mark.parametrize("doc", docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert validation_errors(doc) == []


def test_node_agent_mounts_only_the_kubelet_seccomp_directory_and_drops_everything() -> None:
    (daemonset,) = by_kind("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["jovial-guard", "node-agent"]
    root = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--kubelet-root="))
    (mount,) = [m for m in container["volumeMounts"] if m["name"] != "status"]
    assert mount["mountPath"] == f"{root}/seccomp"
    (volume,) = [v for v in spec["volumes"] if "hostPath" in v]
    assert volume["name"] == mount["name"] and volume["hostPath"]["path"] == "/var/lib/kubelet/seccomp"
    # The only other volume is the pod's own, for the readiness status.
    assert [v["name"] for v in spec["volumes"]] == [mount["name"], "status"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]
    # Attestation needs the host's processes: off in this least-privileged agent.
    assert "--attest-interval=0" in container["args"]
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    # Its namespace is privileged (hostPath) and holds only the agent.
    (namespace,) = by_kind("Namespace")
    assert namespace["metadata"]["name"] == daemonset["metadata"]["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    namespaced = {d["kind"] for d in docs() if d["metadata"].get("namespace") == namespace["metadata"]["name"]}
    assert namespaced == {"DaemonSet", "ServiceAccount"}


def test_node_agent_may_only_read_and_patch_nodes() -> None:
    (role,) = by_kind("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    (binding,) = by_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (daemonset,) = by_kind("DaemonSet")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": daemonset["spec"]["template"]["spec"]["serviceAccountName"],
                                    "namespace": daemonset["metadata"]["namespace"]}]


ISOLATION = NODE_AGENT / "isolation"


def isolation_docs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(ISOLATION.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


@pytest.mark.parametrize("doc", isolation_docs(), ids=lambda d: f"isolation-{d['kind']}/{d['metadata']['name']}")
def test_isolation_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert validation_errors(doc) == []


def test_isolation_agent_replaces_the_profiles_only_agent_and_its_paths_agree() -> None:
    """Same DaemonSet name (one agent per node); the grant, staging, socket and plugin paths
    its arguments name are the host paths it mounts; mounts reach the host only from the
    staging directory; Secrets only listed and annotated, pods only read."""
    (daemonset,) = [d for d in isolation_docs() if d["kind"] == "DaemonSet"]
    (plain,) = by_kind("DaemonSet")
    assert (daemonset["metadata"]["name"], daemonset["metadata"]["namespace"]) == (
        plain["metadata"]["name"], plain["metadata"]["namespace"])
    spec = daemonset["spec"]["template"]["spec"]
    # hostPID: attestation reads the notebook pods' processes.
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    (container,) = spec["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    host = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    assert host[mounts[args["state-dir"]]["name"]] == args["state-dir"] == "/var/lib/jovial-guard-node"
    assert args["staging-root"].startswith(args["state-dir"] + "/")
    assert args["grants-namespace"] == daemonset["metadata"]["namespace"]
    assert host[mounts["/run/jovial-guard/node"]["name"]] == str(Path(args["cni-socket"]).parent)
    assert host[mounts[args["cni-bin-dir"]]["name"]] == "/opt/cni/bin"
    assert host[mounts[str(Path(args["cni-conflist"]).parent)]["name"]] == "/etc/cni/net.d"
    # Only the staging directory's mounts reach the host, from a volume of its own (at the
    # same path on both sides), so it is already shared inside the pod; the socket's directory
    # is at the same path too: the agent writes the socket's path into the conflist.
    propagating = {path for path, m in mounts.items() if m.get("mountPropagation") == "Bidirectional"}
    assert propagating == {args["staging-root"]}
    assert host[mounts[args["staging-root"]]["name"]] == args["staging-root"]
    assert mounts["/run/jovial-guard/node"]["name"] == "run" and host["run"] == "/run/jovial-guard/node"
    # The policy data the rules come from: the site's data.json, not the image's.
    assert mounts[str(Path(args["policy-data"]).parent)]["readOnly"] is True
    assert container["image"].startswith("localhost/jovial-guard/node-agent:")
    rules = {(d["kind"], tuple(r["resources"]), tuple(r["verbs"])) for d in isolation_docs()
             if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]}
    assert rules == {("ClusterRole", ("pods",), ("get", "list")), ("Role", ("secrets",), ("list", "patch"))}
    assert float(args["attest-interval"]) > 0
    assert mounts["/sys/fs/cgroup"]["readOnly"] is True and host[mounts["/sys/fs/cgroup"]["name"]] == "/sys/fs/cgroup"


def readiness(daemonset: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The container's readiness probe and the status file its agent writes."""
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    status_file = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--status-file="))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    # The status lives in the pod's own emptyDir: a new pod never starts Ready from an old status.
    (status_volume,) = [name for name, path in mounts.items() if status_file.startswith(path + "/")]
    assert "emptyDir" in volumes[status_volume], volumes[status_volume]
    return container["readinessProbe"], status_file


@pytest.mark.parametrize("which", ["profiles-only", "isolation"])
def test_both_daemonsets_probe_readiness_with_the_agents_status_check(which: str) -> None:
    """An exec probe (no port on the node): ``jovial-guard node-ready`` on the file the agent
    writes, the same file the agent's ``--status-file`` names; a probe period shorter than the
    agent's pass interval, so a failing loop shows within two passes."""
    source = by_kind("DaemonSet") if which == "profiles-only" else [d for d in isolation_docs() if d["kind"] == "DaemonSet"]
    (daemonset,) = source
    probe, status_file = readiness(daemonset)
    assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds"} == {"exec"}
    assert probe["exec"]["command"] == ["jovial-guard", "node-ready", f"--status-file={status_file}"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    interval = float(next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--interval=")))
    assert probe["periodSeconds"] < interval and probe["timeoutSeconds"] <= probe["periodSeconds"]
    assert "startupProbe" not in container and "livenessProbe" not in container
