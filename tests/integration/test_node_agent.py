"""The node agent on a real node, and the red team inside a real notebook pod.

The cluster starts with an empty kubelet seccomp directory. ``jovial-guard node-agent`` runs
as a host process against the kubelet's root and the API server (on a production cluster it
is the DaemonSet in deploy/node-agent/): it installs the notebook profile and labels the node.
The project's webhook (a real OPA on the committed policies) then patches each notebook pod to
``Localhost jovial-guard/notebook.json`` and makes it select the label, so:

* a notebook pod runs under the notebook profile (``process_vm_readv``, which the runtime's
  default profile allows, answers EPERM);
* without the label a new notebook pod is never scheduled (Pending, FailedScheduling) until
  the agent labels the node again;
* the agent's loop removes the label when it cannot keep the profile in place.

The red team's probe (``node_redteam.REDTEAM``) attacks from inside a webhook-patched pod:
read-only root, capabilities, NoNewPrivs, seccomp, mount/unshare/keyctl/ptrace, raw sockets,
setuid, the kubelet's API and OPA, the fork bomb (the kubelet's podPidsLimit) and memory.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from jovial_guard.hardening.quantity import parse_quantity
from jovial_guard.node.labels import DIGEST_ANNOTATION, READY_LABEL
from jovial_guard.node.profiles import digest, load_profiles

from .node_agent_run import AgentLoop, run_agent_once
from .node_cluster import NODE_NAME, POD_PIDS_LIMIT, NodeCluster
from .node_isolation_pods import create_pod, wait_finished
from .node_pods import NOTEBOOK_PROFILE, WEBHOOK_NAMESPACE, probe_pod
from .node_redteam import REDTEAM
from .node_webhook import registered_webhook

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "seccomp" / "notebook.json"


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    cluster = NodeCluster(preinstall_profiles=False)
    with cluster:
        yield cluster
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def core(node: NodeCluster) -> client.CoreV1Api:
    api = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    # The webhook configurations select namespaces by this label (as install.sh sets it).
    node.make_namespace(api, WEBHOOK_NAMESPACE, {"jovial-guard.io/guarded": "true"})
    return api


def node_labels(node: NodeCluster) -> tuple[dict[str, str], dict[str, str]]:
    doc = node.get_object("node", NODE_NAME) or {}
    meta = doc.get("metadata", {})
    return meta.get("labels", {}), meta.get("annotations", {})


@pytest.fixture(scope="module")
def agent_installed(node: NodeCluster, core: client.CoreV1Api) -> str:
    """One agent pass on the empty node; returns its output line."""
    assert not (node.seccomp_dir() / NOTEBOOK_PROFILE).exists()
    assert READY_LABEL not in node_labels(node)[0]
    result = run_agent_once(node)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def webhook(agent_installed: str, core: client.CoreV1Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The webhook registered with the cluster; yields OPA's URL."""
    with registered_webhook(core.api_client, tmp_path_factory.mktemp("node-webhook")) as opa_url:
        pods = DynamicClient(core.api_client).resources.get(api_version="v1", kind="Pod")
        deadline = time.monotonic() + 60
        while True:
            seen = pods.create(body=probe_pod("webhook-ready", WEBHOOK_NAMESPACE), namespace=WEBHOOK_NAMESPACE,
                               query_params=[("dryRun", "All")]).to_dict()
            if (seen["spec"].get("securityContext") or {}).get("seccompProfile"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the API server never called the jovial-guard webhook")
            time.sleep(0.3)
        yield opa_url


def finished(core: client.CoreV1Api, name: str, *, timeout: float = 300) -> dict[str, Any]:
    """The report of probe pod ``name`` in the webhook's namespace, once it has ended."""
    return wait_finished(core, name, WEBHOOK_NAMESPACE, timeout=timeout)


def scheduling_events(core: client.CoreV1Api, name: str) -> list[str]:
    events = core.list_namespaced_event(WEBHOOK_NAMESPACE, field_selector=f"involvedObject.name={name}").items
    return [f"{e.reason}: {e.message}" for e in events if e.reason == "FailedScheduling"]


def test_agent_installs_the_profile_and_labels_the_node(node: NodeCluster, agent_installed: str) -> None:
    installed = node.kubelet_root / "seccomp" / "jovial-guard" / "notebook.json"
    assert installed.read_bytes() == load_profiles(PROFILE.parent)["notebook.json"]
    labels, annotations = node_labels(node)
    assert labels[READY_LABEL] == "true"
    assert annotations[DIGEST_ANNOTATION] == "sha256:" + digest(load_profiles(PROFILE.parent))
    rewritten = agent_installed.split("rewritten: ", 1)[1].split(";")[0].split(")")[0]
    assert "notebook.json" in [name.strip() for name in rewritten.split(",")], agent_installed
    # A second pass finds nothing to do and keeps the label.
    again = run_agent_once(node)
    assert again.returncode == 0 and "rewritten: none" in again.stdout, again


def test_notebook_through_the_webhook_runs_under_the_notebook_profile(core: client.CoreV1Api, webhook: str) -> None:
    create_pod(core.api_client, probe_pod("nb-profile", WEBHOOK_NAMESPACE))
    stored = core.read_namespaced_pod("nb-profile", WEBHOOK_NAMESPACE)
    profile = stored.spec.security_context.seccomp_profile
    assert (profile.type, profile.localhost_profile) == ("Localhost", NOTEBOOK_PROFILE)
    assert stored.spec.node_selector == {READY_LABEL: "true"}
    report = finished(core, "nb-profile")
    assert (report["Seccomp"], report["NoNewPrivs"], report["CapEff"]) == ("2", "1", "0000000000000000")
    # Allowed by the runtime's default profile, refused by the notebook profile.
    assert report["process_vm_readv"] == errno.EPERM
    assert report["unshare"] == errno.EPERM


def test_without_the_label_a_notebook_is_never_scheduled(node: NodeCluster, core: client.CoreV1Api, webhook: str) -> None:
    core.patch_node(NODE_NAME, {"metadata": {"labels": {READY_LABEL: None}}})
    create_pod(core.api_client, probe_pod("nb-unlabelled", WEBHOOK_NAMESPACE))
    deadline = time.monotonic() + 60
    while not scheduling_events(core, "nb-unlabelled"):
        assert time.monotonic() < deadline, "no FailedScheduling event for a pod whose node lacks the label"
        time.sleep(1)
    time.sleep(5)
    pod = core.read_namespaced_pod("nb-unlabelled", WEBHOOK_NAMESPACE)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None, pod.status
    assert "didn't match Pod's node affinity/selector" in scheduling_events(core, "nb-unlabelled")[0]
    # The agent labels the node again; the waiting pod is scheduled and runs under the profile.
    assert run_agent_once(node).returncode == 0
    report = finished(core, "nb-unlabelled")
    assert report["Seccomp"] == "2" and report["process_vm_readv"] == errno.EPERM


def test_agent_loop_removes_the_label_while_the_profile_cannot_be_kept(
    node: NodeCluster, core: client.CoreV1Api, agent_installed: str, tmp_path: Path,
) -> None:
    directory = node.kubelet_root / "seccomp" / "jovial-guard"
    loop = AgentLoop(node, tmp_path / "agent.log", interval=1)
    try:
        shutil.rmtree(directory)
        directory.write_text("not a directory: the profile cannot be installed")
        deadline = time.monotonic() + 30
        while READY_LABEL in node_labels(node)[0]:
            assert time.monotonic() < deadline, "the label stayed while the profile was gone:\n" + loop.output()
            time.sleep(0.5)
        directory.unlink()
        # Once the directory can be written again, the agent reinstalls and relabels.
        deadline = time.monotonic() + 30
        while node_labels(node)[0].get(READY_LABEL) != "true":
            assert time.monotonic() < deadline, "the agent never relabelled the node:\n" + loop.output()
            time.sleep(0.5)
        assert (directory / "notebook.json").read_bytes() == load_profiles(PROFILE.parent)["notebook.json"]
    finally:
        assert loop.stop() in (0, -15), loop.output()
    assert "cannot install seccomp profiles" in loop.output()


@pytest.fixture(scope="module")
def redteam_report(node: NodeCluster, core: client.CoreV1Api, webhook: str) -> dict[str, Any]:
    """The red team's probe in a webhook-patched notebook pod (the default profile's limits)."""
    from urllib.parse import urlsplit

    kubelet_port = int(json.loads((node.dir / "kubelet.json").read_text())["port"])
    opa_port = urlsplit(webhook).port
    targets = {
        "kubelet_node_ip": [node.network.node_ip, kubelet_port],
        "kubelet_host_bridge": [node.network.host_pod_ip, kubelet_port],
        "opa_loopback": ["127.0.0.1", opa_port],
        "opa_host_bridge": [node.network.host_pod_ip, opa_port],
        "metadata": ["169.254.169.254", 80],
    }
    pod = probe_pod("nb-redteam", WEBHOOK_NAMESPACE)
    container = pod["spec"]["containers"][0]
    container.update(command=["python", "-c", REDTEAM])
    container["env"] = [*container.get("env", []), {"name": "JG_TARGETS", "value": json.dumps(targets)}]
    create_pod(core.api_client, pod)
    report = finished(core, "nb-redteam", timeout=420)
    (REPO / "tests" / "artifacts").mkdir(parents=True, exist_ok=True)
    (REPO / "tests" / "artifacts" / "node_redteam_report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    # The memory limit the hog runs into: KubeSpawner's, the default profile's 2 GiB.
    limits = core.read_namespaced_pod("nb-redteam", WEBHOOK_NAMESPACE).spec.containers[0].resources.limits
    assert parse_quantity(limits["memory"]) == 2 * 2**30, limits
    return report


def test_redteam_kernel_state_in_the_pod(redteam_report: dict[str, Any]) -> None:
    r = redteam_report
    assert (r["Seccomp"], r["NoNewPrivs"], r["uid"]) == ("2", "1", 1000)
    assert r["CapEff"] == r["CapPrm"] == r["CapBnd"] == "0000000000000000"
    assert set(r["ro"].values()) == {errno.EROFS}, r["ro"]
    assert set(r["rw"].values()) == {0}, r["rw"]


def test_redteam_kernel_surfaces_are_refused(redteam_report: dict[str, Any]) -> None:
    r = redteam_report
    assert r["mount"] == errno.EPERM
    assert r["unshare"] == {"user": errno.EPERM, "mnt": errno.EPERM, "net": errno.EPERM}
    assert (r["keyctl"], r["add_key"]) == (errno.EPERM, errno.EPERM)
    assert r["ptrace"] == errno.EPERM
    assert r["raw_socket"] == errno.EPERM
    assert r["setuid"] == errno.EPERM
    assert r["planted_euid"] == "1000"


def test_redteam_kubelet_opa_and_metadata_are_unreachable(redteam_report: dict[str, Any]) -> None:
    net = redteam_report["net"]
    # No route off the pod bridge: the node IP (kubelet) and the metadata address are unroutable.
    assert net["kubelet_node_ip"] == errno.ENETUNREACH, net
    assert net["metadata"] == errno.ENETUNREACH, net
    # The host's address on the pod bridge is reachable, but nothing of the kubelet's or OPA's
    # listens there; the pod's loopback is its own.
    assert net["kubelet_host_bridge"] == errno.ECONNREFUSED, net
    assert net["opa_host_bridge"] == errno.ECONNREFUSED, net
    assert net["opa_loopback"] == errno.ECONNREFUSED, net
    assert redteam_report["default_route"] is False


def test_redteam_fork_bomb_and_memory_are_contained(node: NodeCluster, core: client.CoreV1Api,
                                                    redteam_report: dict[str, Any]) -> None:
    fork, hog = redteam_report["fork"], redteam_report["hog"]
    assert fork["errno"] == errno.EAGAIN and fork["n"] < POD_PIDS_LIMIT, fork
    # The OOM killer, at the pod's 2 GiB.
    assert hog["rc"] == -9 and hog["peak_mib"] <= 2048, hog
    assert node.get_object("node", NODE_NAME) is not None
