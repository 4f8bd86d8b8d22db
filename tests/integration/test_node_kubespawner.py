"""KubeSpawner spawns for real: a z2jh-configured hub, the chart's webhook as a pod, a real node.

One single-node cluster for the module (``node_cluster.NodeCluster``). The project's Helm
chart is installed into it (``node_chart``): the webhook runs on the node as a pod from the
project's webhook image, and the API server calls it through its Service's endpoints. A real
JupyterHub with KubeSpawner, configured by zero-to-jupyterhub's own chart from
deploy/zero-to-jupyterhub/values.yaml (``node_hub``), runs on the host. A user logs in, picks
a profile on the spawn page, and the pod KubeSpawner creates passes the webhook (seccomp
``Localhost`` jovial-guard/notebook.json, read-only root with scratch emptyDirs, no
capabilities, non-root), runs on the node, and the user's kernel executes a cell through
the hub's proxy. A profile the policy refuses shows the policy's message on the spawn page,
and no pod is created. The measured times go to tests/artifacts/node_kubespawner_times.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()
if os.environ.get("JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE") == "1":
    pytest.skip("JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE=1: the webhook image, which this test runs as a pod, "
                "was switched off explicitly", allow_module_level=True)

from . import userflow
from .node_agent_run import agent_argv
from .node_chart import (
    APISERVER_ARGS,
    RELEASE,
    WEBHOOK_NAMESPACE,
    Release,
    api,
    egress_with_hub,
    hub_identity,
    install,
    uninstall,
)
from .node_cluster import NODE_NAME, NodeCluster
from .node_hub import NodeHub
from .node_images import notebook_image

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
HUB_NS, _ = hub_identity()
NOTEBOOK_PROFILE = "jovial-guard/notebook.json"
#: Writable in every container, whatever the policy: the runtime's shared-memory and message
#: queue file systems, the kubelet's termination log.
RUNTIME_WRITABLE = {"/dev/shm", "/dev/mqueue", "/dev/termination-log"}
#: Seconds, by step; written once the module is done.
TIMES: dict[str, float] = {}

#: Runs in the user's kernel: the libraries, and what the kernel sees of its own container.
CELL = r"""
import errno, json, os
import numpy as np
from astropy import units as u
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    open("/jg-probe", "w")
    root = 0
except OSError as exc:
    root = exc.errno
writable = sorted({p[1] for p in (l.split() for l in open("/proc/self/mounts"))
                   if not p[1].startswith(("/proc", "/sys")) and os.access(p[1], os.W_OK)})
print(json.dumps({"sum": int(np.arange(4).sum()), "km": (1 * u.km).to(u.m).value, "uid": os.getuid(),
                  "Seccomp": status["Seccomp"].strip(), "NoNewPrivs": status["NoNewPrivs"].strip(),
                  "CapEff": status["CapEff"].strip(), "write_root": root, "writable": writable}))
"""


def timed(what: str, started: float) -> None:
    TIMES[what] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    cluster = NodeCluster(apiserver_args=APISERVER_ARGS, preinstall_profiles=False)
    started = time.monotonic()
    with cluster:
        timed("cluster start", started)
        yield cluster
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "node_kubespawner_times.json").write_text(json.dumps(TIMES, indent=1))
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def unstarted_hub(node: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> NodeHub:
    """The hub's addresses are chosen first: the egress rules name the hub's API."""
    return NodeHub(node, tmp_path_factory.mktemp("node-hub"), notebook_image=notebook_image())


@pytest.fixture(scope="module")
def release(node: NodeCluster, unstarted_hub: NodeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    # The node agent installs the profiles (resolved for this node's architecture: containerd
    # reads a Localhost profile as OCI LinuxSeccomp) and labels the node; notebooks select it.
    agent = subprocess.run(agent_argv(node, "--once"),
                           capture_output=True, text=True, timeout=120, check=False)
    assert agent.returncode == 0, agent.stderr
    installed = install(node, tmp_path_factory.mktemp("node-chart"),
                        egress=egress_with_hub(unstarted_hub.hub_ip, unstarted_hub.hub_port))
    TIMES["webhook image import"] = round(installed.import_seconds, 1)
    TIMES["helm install --wait (webhook pod ready)"] = round(installed.install_seconds, 1)
    TIMES["until the API server calls it"] = round(installed.serving_seconds, 1)
    yield installed
    uninstall(node, installed)


@pytest.fixture(scope="module")
def hub(unstarted_hub: NodeHub, release: Release) -> Iterator[NodeHub]:
    started = time.monotonic()
    try:
        unstarted_hub.start()
        timed("hub start", started)
        yield unstarted_hub
    finally:
        unstarted_hub.stop()


def pod(node: NodeCluster, name: str) -> dict[str, Any] | None:
    return node.get_object("pod", name, HUB_NS)


def test_the_webhook_runs_on_the_node_from_the_project_image(node: NodeCluster, release: Release) -> None:
    _, pods = api(node, "GET", f"/api/v1/namespaces/{WEBHOOK_NAMESPACE}/pods")
    (webhook,) = [p for p in pods["items"] if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "install-gate"]
    assert webhook["spec"]["nodeName"] == NODE_NAME and webhook["status"]["phase"] == "Running"
    assert {c["image"] for c in webhook["spec"]["containers"]} == {release.image}
    # The chart's default engine: the prepared policies compiled, decided in the webhook's workers.
    args = next(c for c in webhook["spec"]["containers"] if c["name"] == "webhook")["args"]
    assert "--engine=wasm" in args and "--policy-dir=/policies/policies" in args, args
    assert [c["name"] for c in webhook["spec"]["containers"]] == ["webhook"]  # no OPA in the pod
    assert all(c["ready"] for c in webhook["status"]["containerStatuses"])
    # The API server reaches it through the Service (endpoint routing), not through a URL.
    _, mutating = api(node, "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}")
    service = mutating["webhooks"][0]["clientConfig"]["service"]
    assert (service["namespace"], service["name"]) == (WEBHOOK_NAMESPACE, f"{RELEASE}-webhook")
    assert mutating["webhooks"][0]["failurePolicy"] == "Fail"


def test_denied_profile_shows_the_policys_message_and_creates_no_pod(node: NodeCluster, hub: NodeHub) -> None:
    session = userflow.login(hub.url, "hank", "any")
    error = userflow.spawn_from_form(session, hub.url, "hank", "large-memory")
    assert error.startswith("Spawn failed: the policy refused this server: [profiles/not-allowed]"), error
    assert "HTTP response" not in error, error
    assert 'The "large-memory" profile is available to members of large-memory, staff' in error, error
    assert "Choose another profile" in error, error
    print(f"\nspawn page for a denied profile: {error[:600]}")
    assert pod(node, "jupyter-hank") is None


def test_user_spawns_and_runs_a_cell_in_a_hardened_pod_on_the_node(node: NodeCluster, hub: NodeHub) -> None:
    session = userflow.login(hub.url, "nadia", "any")
    started = time.monotonic()
    error = userflow.spawn_from_form(session, hub.url, "nadia", "default", timeout=240)
    assert error == "", f"{error}\n{hub.diagnosis('jupyter-nadia')}"
    timed("spawn to ready (spawn page to the server's API answering)", started)
    try:
        stored = pod(node, "jupyter-nadia")
        assert stored is not None
        spec = stored["spec"]
        assert spec["nodeName"] == NODE_NAME and stored["status"]["phase"] == "Running"
        assert spec["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": NOTEBOOK_PROFILE}
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        scratch = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in scratch}
        assert mounts == {"/tmp", "/home/jovyan"}
        assert stored["metadata"]["annotations"]["jovial-guard.io/profile"] == "default"

        started = time.monotonic()
        try:
            out = userflow.run_cell(hub.url, "nadia", session, CELL, timeout=120)
        except Exception as exc:
            raise AssertionError(f"the cell did not run: {exc}\n{hub.diagnosis('jupyter-nadia')}") from exc
        timed("first cell (kernel start + numpy + astropy)", started)
        assert out["status"] == "ok", f"{out}\n{hub.diagnosis('jupyter-nadia')}"
        report = json.loads(out["stdout"].strip().splitlines()[-1])
        assert (report["sum"], report["km"], report["uid"]) == (6, 1000.0, 1000)
        assert (report["Seccomp"], report["NoNewPrivs"], report["CapEff"]) == ("2", "1", "0000000000000000")
        assert report["write_root"] == 30  # EROFS
        # JupyterLab runs with nothing writable to uid 1000 but the two scratch emptyDirs and
        # what every container has: the runtime's /dev/shm and /dev/mqueue, the kubelet's
        # termination log.
        assert set(report["writable"]) == {"/tmp", "/home/jovyan"} | RUNTIME_WRITABLE, report["writable"]
    finally:
        headers = userflow._auth(session, hub.url, "nadia")
        session.delete(f"{hub.url}/hub/api/users/nadia/server", headers=headers, timeout=60)
    deadline = time.monotonic() + 90
    while pod(node, "jupyter-nadia") is not None:
        assert time.monotonic() < deadline, "KubeSpawner did not delete the pod on stop"
        time.sleep(1)


#: Threads, clone3, and clone with CLONE_NEWUSER and a zero stack argument (fork-like).
CLONE_PROBE = r"""
import ctypes, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
out = {}
try:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    out["thread"] = "started"
except RuntimeError as exc:
    out["thread"] = str(exc)
ctypes.set_errno(0)
out["clone3"] = ctypes.get_errno() if libc.syscall(435, 0, 0) == -1 else 0
ctypes.set_errno(0)
pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
out["clone_newuser"] = ctypes.get_errno() if pid == -1 else 0
if pid > 0:
    os.waitpid(pid, 0)
open("/dev/termination-log", "w").write(json.dumps(out))
"""


def run_clone_probe(node: NodeCluster, name: str, profile: str) -> dict[str, Any]:
    from jovial_guard.decision import ProfileRef

    from .node_pods import NAMESPACE, hardened_pod

    api(node, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    pod = hardened_pod(name, ProfileRef("Localhost", profile))
    pod["spec"]["containers"][0]["command"] = ["python", "-c", CLONE_PROBE]
    status, body = api(node, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    assert status == 201, body
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stored = node.get_object("pod", name, NAMESPACE) or {}
        if stored.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            terminated = stored["status"]["containerStatuses"][0]["state"]["terminated"]
            return json.loads(terminated["message"])  # type: ignore[no-any-return]
        time.sleep(1)
    raise AssertionError(f"probe {name} did not finish: {stored.get('status')}")


def test_containerd_needs_the_profile_resolved_for_the_nodes_architecture(node: NodeCluster, release: Release) -> None:
    """containerd reads a Localhost profile as OCI LinuxSeccomp: the committed profile's
    per-architecture rules all apply. The resolved one (what the node has here) behaves as
    podman applies the committed one."""
    raw = node.seccomp_dir() / "jg-committed" / "notebook.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes((REPO / "profiles" / "seccomp" / "notebook.json").read_bytes())
    committed = run_clone_probe(node, "clone-committed", "jg-committed/notebook.json")
    resolved = run_clone_probe(node, "clone-resolved", NOTEBOOK_PROFILE)
    print(f"\ncommitted profile on containerd: {committed}\nresolved profile: {resolved}")
    assert resolved == {"thread": "started", "clone3": 38, "clone_newuser": 38}
    # The mips clone3 rule (errno 89) wins, and glibc falls back to clone only on ENOSYS.
    assert committed["clone3"] == 89 and committed["thread"] == "can't start new thread"
    # The s390 clone rule (flags in the second argument) passes a zero stack argument.
    assert committed["clone_newuser"] != 38


def test_notebook_egress_allows_the_hubs_api_at_the_address_it_listens_on(node: NodeCluster, release: Release,
                                                                         hub: NodeHub) -> None:
    """The release's notebook NetworkPolicies (kept for CNIs that enforce them) allow the
    notebook exactly the hub API's address and port, where the hub listens here."""
    _, policy = api(node, "GET", f"/apis/networking.k8s.io/v1/namespaces/{HUB_NS}/networkpolicies/jovial-guard-hub")
    allowed = {(peer["ipBlock"]["cidr"], port["port"]) for rule in policy["spec"]["egress"]
               for peer in rule.get("to", []) if "ipBlock" in peer for port in rule.get("ports", [])}
    assert allowed == {(f"{hub.hub_ip}/32", hub.hub_port)}
    assert hub.log().count(f"http://{hub.hub_ip}:{hub.hub_port}") >= 1
