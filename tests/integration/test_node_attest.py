"""The node agent attests a hardened notebook pod on a real node, and reports drift caused
from the host.

The agent (``jovial-guard node-agent --attest-interval 1``, a host process as in
test_node_agent.py) finds the notebook pods on its node through the API server, reads each
container's processes from ``/proc`` and compares them with the admitted pod spec. A clean
pod (the renderer's patch, the notebook seccomp profile) attests ok; a process entered into
the container's namespaces with ``nsenter`` (no filter, full capabilities, outside the
container's cgroup) and a read-write remount of its root are reported as drift.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import ProfileRef
from jovial_guard.processes import stop_group

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from jovial_guard.node.attest import DEFAULT_SELECTOR, cgroup_index, container_pid

from .node_agent_run import agent_argv
from .node_cluster import NodeCluster
from .node_pods import NAMESPACE, NOTEBOOK_PROFILE, hardened_pod

INTERVAL = 1.0
POD = "attest-alice"


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    cluster = NodeCluster()
    with cluster:
        yield cluster
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def running_pod(node: NodeCluster) -> Iterator[dict[str, Any]]:
    core = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    node.make_namespace(core, NAMESPACE)
    pod = hardened_pod(POD, ProfileRef("Localhost", NOTEBOOK_PROFILE))
    pod["spec"]["containers"][0].update(command=["python", "-c", "import time; time.sleep(900)"])
    # POSTed as KubeSpawner does (numbers stay numbers), as test_node_hardened_pod.py does.
    DynamicClient(core.api_client).resources.get(api_version="v1", kind="Pod").create(body=pod, namespace=NAMESPACE)
    deadline = time.monotonic() + 120
    while True:
        live = core.read_namespaced_pod(POD, NAMESPACE)
        statuses = live.status.container_statuses or []
        if statuses and statuses[0].state.running:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {POD} did not start: {live.status}")
        time.sleep(0.5)
    yield {"containerID": statuses[0].container_id, "labels": live.metadata.labels}
    core.delete_namespaced_pod(POD, NAMESPACE, grace_period_seconds=0)


class Agent:
    def __init__(self, node: NodeCluster, log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(agent_argv(node, "--interval", "30", "--attest-interval", str(INTERVAL)),
                                     stdout=self._out, stderr=self._out, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            _, marker, doc = line.partition("INFO attestation ")
            if marker:
                out.append(json.loads(doc))
        return out

    def stop(self) -> None:
        stop_group(self.proc, grace=20)
        self._out.close()


def wait_for(check: Callable[[], list[dict[str, Any]]], timeout: float, what: str, agent: Agent) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found[-1]
        if agent.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no {what}; agent log:\n" + agent.log.read_text(errors="replace")[-3000:])


def test_agent_attests_a_pod_and_reports_drift(node: NodeCluster, running_pod: dict[str, Any], tmp_path: Path) -> None:
    assert running_pod["labels"].get("component") == DEFAULT_SELECTOR.split("=")[1]
    pid = container_pid(running_pod["containerID"], cgroup_index())
    assert pid is not None, "the container's cgroup was not found from /proc"
    agent = Agent(node, tmp_path / "agent.log")
    intruder: subprocess.Popen[bytes] | None = None
    try:
        def ours(rule: str, kind: str | None = None) -> Callable[[], list[dict[str, Any]]]:
            return lambda: [e for e in agent.events() if e["pod"] == POD and e["rule"] == rule
                            and (kind is None or kind in {d["kind"] for d in e["fields"]["drifts"]})]

        ok = wait_for(ours("attestation ok"), 60, "clean attestation of the pod", agent)
        assert ok["fields"]["pid"] == pid and ok["user"] == running_pod["labels"]["hub.jupyter.org/username"]
        caused = time.monotonic()
        intruder = subprocess.Popen(["nsenter", "-t", str(pid), "-m", "-p", "--", "sleep", "300"],
                                    start_new_session=True)
        drift = wait_for(ours("attestation drift", "seccomp"), 30, "drift for the nsenter'd process", agent)
        latency = time.monotonic() - caused
        kinds = {d["kind"] for d in drift["fields"]["drifts"]}
        assert {"seccomp", "no_new_privs", "capabilities", "limits"} <= kinds, kinds
        assert drift["priority"] == "Critical"
        print(f"\nnode attestation: nsenter'd process reported within {latency:.2f} s (period {INTERVAL:g} s)")
        remount = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "mount", "-o", "remount,bind,rw", "/"],
                                 capture_output=True, text=True, timeout=30)
        assert remount.returncode == 0, remount.stderr
        wait_for(ours("attestation drift", "mount"), 30, "drift for the read-write root", agent)
    finally:
        if intruder is not None:
            os.killpg(intruder.pid, signal.SIGKILL)
            intruder.wait(timeout=30)
        agent.stop()


def test_a_pod_the_webhook_recorded_as_a_notebook_is_attested_without_the_label(node: NodeCluster,
                                                                                tmp_path: Path) -> None:
    """No ``component`` label (a notebook only by its name or claims): the webhook's record,
    set here as the webhook sets it, is enough for the agent to attest the pod."""
    core = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    pod = hardened_pod("attest-byname", ProfileRef("Localhost", NOTEBOOK_PROFILE))
    pod["spec"]["containers"][0].update(command=["python", "-c", "import time; time.sleep(900)"])
    assert pod["metadata"]["labels"].pop("component") == "singleuser-server"
    pod["metadata"]["annotations"] = {**pod["metadata"].get("annotations", {}), "jovial-guard.io/notebook": "true"}
    DynamicClient(core.api_client).resources.get(api_version="v1", kind="Pod").create(body=pod, namespace=NAMESPACE)
    agent = Agent(node, tmp_path / "agent.log")
    try:
        ok = wait_for(lambda: [e for e in agent.events() if e["pod"] == "attest-byname" and e["rule"] == "attestation ok"],
                      120, "clean attestation of the pod recorded as a notebook", agent)
        assert ok["fields"]["pid"] > 0
    finally:
        agent.stop()
        core.delete_namespaced_pod("attest-byname", NAMESPACE, grace_period_seconds=0)
