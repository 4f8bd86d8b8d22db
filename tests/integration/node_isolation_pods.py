"""Pods and grants for the node isolation tests: KubeSpawner's pods created as the hub.

``notebook_pod`` is KubeSpawner's pod for a user and groups; its container runs ``SERVER``, a
stand-in for the notebook server on port 8888 that answers each GET with what the pod sees of
``/lustre`` right now, so the test can watch a grant appear and disappear in a running pod
(through the pod's ingress rule: only the hub's address may open the notebook port).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tests.admission.kubespawner_pods import kubespawner_pod_sync

from .node_cluster import NodeCluster
from .node_images import notebook_image

HUB_SA = "system:serviceaccount:jhub:hub"
NOTEBOOK_PORT = 8888

SERVER = r"""
import http.server, json, os
def look():
    out = {}
    try:
        out["home"] = sorted(os.listdir("/lustre/home"))
    except OSError as exc:
        out["home"] = exc.errno
    try:
        out["marker"] = open("/lustre/home/marker").read().strip()
    except OSError as exc:
        out["marker"] = exc.errno
    out["staged"] = sorted(l.split()[4] + " " + l.split()[3] for l in open("/proc/self/mountinfo") if l.split()[4].startswith("/lustre"))
    return out
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(look()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", 8888), H).serve_forever()
"""


def as_hub(node: NodeCluster) -> client.ApiClient:
    """The cluster admin's credentials, impersonating the hub's service account."""
    api = config.new_client_from_config(str(node.kubeconfig))
    api.set_default_header("Impersonate-User", HUB_SA)
    return api


def allow_hub(core: client.CoreV1Api, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "hub"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "hub"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
        "subjects": [{"kind": "User", "name": HUB_SA, "apiGroup": "rbac.authorization.k8s.io"}]})


def notebook_pod(user: str, name: str, *, groups: tuple[str, ...] = (), namespace: str = "jhub",
                 command: list[str] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    pod = kubespawner_pod_sync(username=user, groups=groups, image=notebook_image(), namespace=namespace)
    pod["metadata"].update(name=name, namespace=namespace)
    pod["spec"]["automountServiceAccountToken"] = False
    container = pod["spec"]["containers"][0]
    container.update(command=command or ["python", "-c", SERVER], args=[], imagePullPolicy="Never")
    container.pop("lifecycle", None)
    container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in (env or {}).items())]
    if command is not None:
        pod["spec"]["restartPolicy"] = "Never"
    return pod


def create_pod(api: client.ApiClient, pod: dict[str, Any]) -> dict[str, Any]:
    """Create ``pod`` through ``api`` (as whoever ``api`` authenticates); the stored object."""
    from kubernetes.dynamic import DynamicClient

    pods = DynamicClient(api).resources.get(api_version="v1", kind="Pod")
    return pods.create(body=pod, namespace=pod["metadata"]["namespace"]).to_dict()  # type: ignore[no-any-return]


def wait_running(core: client.CoreV1Api, name: str, namespace: str, *, timeout: float = 240) -> str:
    """The pod's IP once its container runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if statuses and statuses[0].state.running and pod.status.pod_ip:
            return str(pod.status.pod_ip)
        if pod.status.phase in ("Succeeded", "Failed"):
            raise AssertionError(f"pod {name} ended: {pod.status}")
        time.sleep(1)
    raise AssertionError(f"pod {name} not running within {timeout}s: {core.read_namespaced_pod(name, namespace).status}")


def wait_finished(core: client.CoreV1Api, name: str, namespace: str, *, timeout: float = 420) -> dict[str, Any]:
    """The JSON report a probe pod's container left as its termination message, once the pod
    has ended; fails when it failed or did not end (with its last status and events)."""
    deadline = time.monotonic() + timeout
    status: Any = None
    while time.monotonic() < deadline:
        status = core.read_namespaced_pod(name, namespace).status
        if status.phase in ("Succeeded", "Failed"):
            terminated = status.container_statuses[0].state.terminated
            assert status.phase == "Succeeded", f"pod {name} failed: {terminated}"
            return json.loads(terminated.message)  # type: ignore[no-any-return]
        time.sleep(1)
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    raise AssertionError(f"pod {name} did not finish within {timeout}s: {status}; "
                         f"events: {[e.message for e in events.items]}")


def look(pod_ip: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{pod_ip}:{NOTEBOOK_PORT}/", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def until(what: str, check: Any, *, timeout: float = 30) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def policy_copy(source: Path, target: Path, *, staging_root: Path, archive: str) -> Path:
    """The committed policies with the node's staging root, everyone on their own home
    fileset, and the astro group's allowlist pointed at the test archive (port 80)."""
    import shutil

    shutil.copytree(source, target)
    data = json.loads((target / "data.json").read_text())
    settings = data["settings"]
    settings["node"]["staging_root"] = str(staging_root)
    settings["storage"]["group_order"] = []
    settings["egress"]["groups"]["astro"] = [{"cidr": f"{archive}/32", "ports": [80], "protocol": "tcp",
                                             "comment": "test archive"}]
    (target / "data.json").write_text(json.dumps(data, indent=1))
    return target


def deliver_grant(core: client.CoreV1Api, issuer: Any, user: str, *, node: str, namespace: str,
                  lifetime: int = 3600) -> str:
    """Issue ``user``'s grant on ``home/<user>`` and deliver it sealed to ``node``'s agent, as
    the hub does; the grant's serial."""
    from jovial_guard.node import grant_channel

    issued = issuer.issue(user=user, uid=1000, gid=100, fileset=f"home/{user}", mode="rw",
                          mount_path="/lustre/home", lifetime=lifetime)
    grant_channel.deliver(core.api_client, issuer, issued.grant, node=node, namespace=namespace)
    return str(issued.grant.serial)


def grant_status(core: client.CoreV1Api, serial: str, namespace: str) -> str:
    """What the node agent wrote on the grant's Secret ("mounted ...", "refused: ...")."""
    from jovial_guard.node import grant_channel

    secret = core.read_namespaced_secret(grant_channel.secret_name(serial), namespace)
    return str((secret.metadata.annotations or {}).get(grant_channel.STATUS_ANNOTATION, ""))
