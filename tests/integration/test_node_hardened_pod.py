"""Hardened notebook pods actually run on a real node, and the kernel enforces the patches.

A single-node cluster (``node_cluster.NodeCluster``: etcd, kube-apiserver, scheduler,
controller-manager, kubelet, containerd v2, runc, CNI bridge) runs the project's notebook
image in the pod KubeSpawner makes, hardened by ``render_pod_patch`` exactly as the webhook
patches it (read-only root with emptyDir scratch for /tmp and home, uid 1000, drop ALL, no
privilege escalation). The container's own probe reports what the kernel applied, through
its termination message. The probe's syscall is ``process_vm_readv`` on itself: the runtime's
default seccomp profile allows it (kernel >= 4.8), the notebook profile answers EPERM.
Two more comparisons: the hub's raw pod patched by the webhook itself (through the API
server's admission chain) against the renderer's pod, and the embedded engine's container
(``render_docker``, podman) against the Kubernetes pod under the same notebook profile.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import ProfileRef
from jovial_guard.node.profiles import default_source_dir, load_profiles

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from .node_agent_run import run_agent_once
from .node_cluster import NodeCluster
from .node_isolation_pods import create_pod, wait_finished
from .node_pods import NAMESPACE, NOTEBOOK_PROFILE, PROBE, WEBHOOK_NAMESPACE, hardened_pod, probe_pod, security_spec
from .node_webhook import registered_webhook

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    cluster = NodeCluster()
    with cluster:
        yield cluster
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def core(node: NodeCluster) -> client.CoreV1Api:
    api = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    # The webhook configurations select namespaces by this label (as install.sh sets it);
    # the renderer's namespace stays unguarded.
    node.make_namespace(api, NAMESPACE)
    node.make_namespace(api, WEBHOOK_NAMESPACE, {"jovial-guard.io/guarded": "true"})
    return api


@pytest.fixture(scope="module")
def webhook(node: NodeCluster, core: client.CoreV1Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The project's webhook registered with the cluster (it selects WEBHOOK_NAMESPACE only)."""
    # Notebook pods the webhook patches select the label the node agent sets.
    agent = run_agent_once(node)
    assert agent.returncode == 0, agent.stderr
    with registered_webhook(core.api_client, tmp_path_factory.mktemp("node-webhook")):
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
        yield


@pytest.fixture(scope="module")
def runtime_default_report(core: client.CoreV1Api) -> dict[str, Any]:
    """The probe's report from the renderer-hardened pod under RuntimeDefault."""
    return run_to_completion(core, hardened_pod("probe-runtime-default", ProfileRef("RuntimeDefault")))


def run_to_completion(core: client.CoreV1Api, pod: dict[str, Any], *, timeout: float = 180) -> dict[str, Any]:
    """Create the pod (its JSON as KubeSpawner's kubernetes_asyncio posts it: numbers stay
    numbers), wait until it has finished, return the probe's report."""
    create_pod(core.api_client, pod)
    return wait_finished(core, pod["metadata"]["name"], pod["metadata"]["namespace"], timeout=timeout)


def test_node_is_ready_and_the_host_forwards_nothing(node: NodeCluster) -> None:
    ready = node.get_object("node", "jg-node")
    assert ready is not None
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    # The kubelet's pods live under this run's own cgroup root, in every hierarchy.
    assert all((d / "kubepods").is_dir() for d in node.cgroup_dirs() if d.parent.name in ("memory", "pids", "cpu"))
    # What the node agent installs: the committed profile resolved for this architecture.
    assert (node.seccomp_dir() / NOTEBOOK_PROFILE).read_bytes() == load_profiles(default_source_dir())["notebook.json"]


def test_runtime_default_pod_is_hardened_but_allows_process_vm_readv(runtime_default_report: dict[str, Any]) -> None:
    report = runtime_default_report
    assert report["uid"] == 1000
    assert (report["Seccomp"], report["NoNewPrivs"], report["CapEff"]) == ("2", "1", "0000000000000000")
    assert report["CapBnd"] == "0000000000000000"
    assert report["write_root"] == errno.EROFS
    assert (report["write_tmp"], report["write_home"]) == (0, 0)
    # The runtime's default profile lets a process read its own memory this way.
    assert report["process_vm_readv"] == 0


@pytest.fixture(scope="module")
def notebook_report(core: client.CoreV1Api) -> dict[str, Any]:
    """The probe's report from the renderer-hardened pod under the notebook profile."""
    return run_to_completion(core, hardened_pod("probe-notebook", ProfileRef("Localhost", NOTEBOOK_PROFILE)))


@pytest.fixture(scope="module")
def embedded_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same probe in the embedded engine, hardened by render_docker for the same spec."""
    from jovial_guard.hardening.render_docker import render_docker
    from jovial_guard.hardening.seccomp import notebook_profile_path
    from jovial_guard.runtime.image import ensure_notebook_image
    from jovial_guard.runtime.podman import PodmanService

    rendered = render_docker(security_spec(ProfileRef("Localhost", NOTEBOOK_PROFILE)),
                             seccomp_path=str(notebook_profile_path()), apparmor_supported=False,
                             network_mode="none", home_volume="jg-node-compare-home")
    with PodmanService(socket_path=tmp_path_factory.mktemp("engine") / "podman.sock") as engine:
        image = ensure_notebook_image(engine, progress=lambda m: print(m, file=sys.stderr))
        docker_client = engine.docker_client()
        container = docker_client.containers.create(image, ["python", "-c", PROBE], user=rendered["user"],
                                                    volumes=rendered["volumes"], **rendered["host_config"])
        try:
            container.start()
            status = container.wait(timeout=90)
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
            assert status.get("StatusCode") == 0, f"embedded probe failed: {status}\n{logs}"
            return json.loads(logs.strip().splitlines()[-1])  # type: ignore[no-any-return]
        finally:
            container.remove(force=True)
            docker_client.volumes.get("jg-node-compare-home").remove(force=True)
            docker_client.close()


def test_localhost_notebook_profile_refuses_what_runtime_default_allows(notebook_report: dict[str, Any]) -> None:
    report = notebook_report
    assert (report["Seccomp"], report["NoNewPrivs"], report["CapEff"]) == ("2", "1", "0000000000000000")
    assert report["write_root"] == errno.EROFS
    assert (report["write_tmp"], report["write_home"]) == (0, 0)
    assert report["process_vm_readv"] == errno.EPERM
    assert report["unshare"] == errno.EPERM
    assert "ro" in report["mounts"]["/"]
    assert "rw" in report["mounts"]["/tmp"]
    # The pod network leads nowhere: no default route (isGateway false).
    assert report["default_route"] is False


def test_missing_localhost_profile_fails_closed(core: client.CoreV1Api) -> None:
    pod = hardened_pod("probe-missing-profile", ProfileRef("Localhost", "jovial-guard/absent.json"))
    create_pod(core.api_client, pod)
    deadline = time.monotonic() + 120
    reason = message = ""
    while time.monotonic() < deadline:
        status = core.read_namespaced_pod("probe-missing-profile", NAMESPACE).status
        assert status.phase == "Pending", f"a pod without its seccomp profile left Pending: {status}"
        waiting = status.container_statuses[0].state.waiting if status.container_statuses else None
        if waiting is not None and waiting.reason not in ("ContainerCreating", None):
            reason, message = waiting.reason, waiting.message or ""
            break
        time.sleep(1)
    assert reason == "CreateContainerError", (reason, message)
    assert "absent.json" in message
    state = core.read_namespaced_pod("probe-missing-profile", NAMESPACE).status.container_statuses[0]
    assert state.container_id is None and not state.started


def test_pod_patched_by_the_webhook_runs_exactly_as_rendered(
    core: client.CoreV1Api, webhook: None, notebook_report: dict[str, Any],
) -> None:
    """The hub's raw pod goes through the API server's admission chain to our webhook; what
    the kernel applies to it is what the renderer's pod under the notebook profile got."""
    raw = probe_pod("probe-webhook", WEBHOOK_NAMESPACE)
    assert "readOnlyRootFilesystem" not in (raw["spec"]["containers"][0].get("securityContext") or {})
    report = run_to_completion(core, raw)
    stored = core.read_namespaced_pod("probe-webhook", WEBHOOK_NAMESPACE)
    assert stored.spec.containers[0].security_context.read_only_root_filesystem is True
    profile = stored.spec.security_context.seccomp_profile
    assert (profile.type, profile.localhost_profile) == ("Localhost", NOTEBOOK_PROFILE)
    assert stored.spec.node_selector == {"jovial-guard.io/profiles-ready": "true"}
    assert (report["Seccomp"], report["NoNewPrivs"], report["CapEff"]) == ("2", "1", "0000000000000000")
    compared = ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "uid", "write_root", "write_tmp",
                "write_home", "process_vm_readv", "unshare", "mounts", "default_route")
    assert {k: report[k] for k in compared} == {k: notebook_report[k] for k in compared}


def test_embedded_and_kubernetes_notebooks_get_the_same_kernel_state(
    notebook_report: dict[str, Any], embedded_report: dict[str, Any],
) -> None:
    """One SecuritySpec, two renderers, two runtimes: the kernel sees the same process."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "node_vs_embedded_probe.json").write_text(
        json.dumps({"kubernetes": notebook_report, "embedded": embedded_report}, indent=1, sort_keys=True))
    compared = ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "uid", "write_root", "write_tmp",
                "write_home", "process_vm_readv", "unshare")
    assert {k: embedded_report[k] for k in compared} == {k: notebook_report[k] for k in compared}
    for path in ("/", "/tmp"):
        assert ("ro" in embedded_report["mounts"][path]) == ("ro" in notebook_report["mounts"][path]), path
