"""A real JupyterHub with KubeSpawner, configured by zero-to-jupyterhub's chart, on the host.

The z2jh chart (tests/vectors/z2jh/) is rendered with deploy/zero-to-jupyterhub/values.yaml
and :func:`node_values` (what this one node lacks: no volume provisioner, no user-scheduler,
no idle culler image; the notebook image is the project's build). The chart's own
jupyterhub_config.py turns the rendering into the hub's configuration, exactly as in the hub
pod (``tests.admission.z2jh_chart.hub_config``), and the hub's ServiceAccount, Role and
RoleBinding come from the same rendering. The hub calls the API server with that service
account's token: the policy believes identity annotations only from it.

What the chart's Services give the hub pod is given on the host instead (:func:`host_config`):
the hub's API listens on the host's address on the pod bridge (the notebook reaches it there
directly; the egress rules allow exactly that address and port), configurable-http-proxy is
started by the hub on loopback, and KubeSpawner reaches each notebook by its pod IP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from jovial_guard.policy.opa_process import REPO_ROOT
from jovial_guard.processes import stop_group
from tests.admission.z2jh_chart import find_helm, render

from .node_chart import api, hub_identity
from .node_cluster import NodeCluster, free_port

HUB_OBJECTS = {("ServiceAccount", "hub"), ("Role", "hub"), ("RoleBinding", "hub")}


def node_values(image: str) -> dict[str, Any]:
    """z2jh values for this node, layered over deploy/zero-to-jupyterhub/values.yaml."""
    repository, tag = image.rsplit(":", 1)
    return {
        "singleuser": {"image": {"name": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
                       # No volume provisioner here: home is the webhook's scratch emptyDir.
                       "storage": {"type": "none"}},
        "scheduling": {"userScheduler": {"enabled": False}},
        "cull": {"enabled": False},
    }


def host_config(*, docs: Path, url: str, hub_url: str, proxy_api: str, state: Path | None = None,
                extra: str = "") -> str:
    """The hub's configuration file: the chart's, then the host's stand-ins for its Services
    (and for its state volume, ``state``), then ``extra``."""
    chp = REPO_ROOT / ".tools" / "bin" / "configurable-http-proxy"
    return f"""\
import yaml
from tests.admission.z2jh_chart import hub_config

with open({str(docs)!r}) as fh:
    c.merge(hub_config([d for d in yaml.safe_load_all(fh) if d]))
c.JupyterHub.bind_url = {url!r}
c.JupyterHub.hub_bind_url = {hub_url!r}
c.JupyterHub.hub_connect_url = {hub_url!r}
c.ConfigurableHTTPProxy.should_start = True
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
""" + (f"""\
c.StorageCredentials.state_dir = {str(state / "credentials")!r}
c.StorageCredentials.key_dir = {str(state / "credentials-keys")!r}
""" if state is not None else "") + extra


class NodeHub:
    """The hub process; ``start`` then ``stop``. ``url`` is the proxy's public address."""

    def __init__(self, node: NodeCluster, work: Path, *, notebook_image: str, extra_config: str = "") -> None:
        self.node = node
        self.work = work
        #: The hub's state volume (z2jh's /srv/jupyterhub): the storage issuer's keys live here.
        self.state = work / "hub-state"
        self.extra_config = extra_config
        self.image = notebook_image
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub_ip = node.network.host_pod_ip
        self.hub_port = free_port(self.hub_ip)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "jupyterhub.log"

    def render(self) -> list[dict[str, Any]]:
        helm = find_helm()
        if helm is None:
            raise FileNotFoundError("helm is not built: run scripts/test.d/60-helm.sh (./guard test does)")
        overlay = self.work / "z2jh-node-values.yaml"
        overlay.write_text(yaml.safe_dump(node_values(self.image)))
        return render(helm, "jovial-guard-values", "-f", str(overlay))

    def apply_hub_identity(self, docs: list[dict[str, Any]]) -> Path:
        """The chart's hub ServiceAccount, Role and RoleBinding; a kubeconfig with its token."""
        namespace, account = hub_identity()
        paths = {"ServiceAccount": "api/v1", "Role": "apis/rbac.authorization.k8s.io/v1",
                 "RoleBinding": "apis/rbac.authorization.k8s.io/v1"}
        for doc in docs:
            if (doc["kind"], doc["metadata"]["name"]) in HUB_OBJECTS:
                plural = doc["kind"].lower() + "s"
                status, body = api(self.node, "POST", f"/{paths[doc['kind']]}/namespaces/{namespace}/{plural}",
                                    {**doc, "metadata": {**doc["metadata"], "namespace": namespace}})
                if status != 201:
                    raise RuntimeError(f"{doc['kind']}/hub refused ({status}): {body.get('message')}")
        status, body = api(self.node, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                            {"spec": {"expirationSeconds": 3600}})
        if status != 201:
            raise RuntimeError(f"no token for the hub's service account ({status}): {body.get('message')}")
        kubeconfig = self.work / "hub-kubeconfig"
        ca = self.node.control.dir / "pki" / "ca.crt"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "hub",
            "clusters": [{"name": "node", "cluster": {"server": self.node.control.url, "certificate-authority": str(ca)}}],
            "users": [{"name": "hub", "user": {"token": body["status"]["token"]}}],
            "contexts": [{"name": "hub", "context": {"cluster": "node", "user": "hub", "namespace": namespace}}],
        }))
        kubeconfig.chmod(0o600)
        return kubeconfig

    def start(self, timeout: float = 120) -> NodeHub:
        docs = self.render()
        kubeconfig = self.apply_hub_identity(docs)
        (self.work / "z2jh-rendered.yaml").write_text(yaml.safe_dump_all(docs))
        config = self.work / "jupyterhub_config.py"
        config.write_text(host_config(docs=self.work / "z2jh-rendered.yaml", url=self.url,
                                      hub_url=f"http://{self.hub_ip}:{self.hub_port}",
                                      proxy_api=f"http://127.0.0.1:{free_port('127.0.0.1')}",
                                      state=self.state, extra=self.extra_config))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            env.pop(name, None)  # KubeSpawner must take the kubeconfig, not an in-cluster config
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.work,
                                         env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.url}/hub/login", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"no login page at {self.url} within {timeout:.0f}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pod_log(self, pod_name: str) -> str:
        """The notebook container's output, from the kubelet's pod log directory."""
        namespace, _ = hub_identity()
        found = sorted((self.node.dir / "pod-logs").glob(f"{namespace}_{pod_name}_*/*/*.log"))
        return "".join(p.read_text(errors="replace") for p in found)

    def diagnosis(self, pod_name: str) -> str:
        """What to read when a spawn or a cell fails: the pod's status, its log, the hub's log."""
        namespace, _ = hub_identity()
        pod = self.node.get_object("pod", pod_name, namespace)
        return (f"pod status: {pod and pod.get('status')}\npod log:\n{self.pod_log(pod_name)[-3000:]}\n"
                f"hub log:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM the hub (it stops the proxy it started), then the proxy by its pid file."""
        if self.proc is not None:
            stop_group(self.proc, grace=30)
        pid_file = self.work / "jupyterhub-proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
