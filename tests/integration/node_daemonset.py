"""The node agent's DaemonSet as a user installs it: the committed manifests, applied.

``for_this_node`` changes only what differs per cluster, each change named: the image (the
node agent's build, tagged by its key), the host paths (this run's kubelet root, CNI
directories, staging and fileset directories, all under the cluster's own directory; never
the host's real ``/var/lib/kubelet`` or ``/opt/cni``), the options that name those paths or
this run's hub, and the API server's address (no kube-proxy here). A host-path volume the
manifest gains without a mapping here is an error, not a silent mount of a real host path.
``apply`` is ``kubectl apply --server-side``: the API's server-side apply with one field
manager, so applying the isolation DaemonSet over the profiles-only one replaces it as
kubectl would. The agent's output is read from the kubelet's pod log directory.

No kube-proxy runs here, so the ``kubernetes`` Service's address leads nowhere; what kube-proxy
would do for it (take connections to the Service and pass them to the API server) is
``ApiForwarder``: a plain TCP relay on the host's pod-bridge address, the agent told that
address in ``KUBERNETES_SERVICE_HOST``/``PORT`` (TLS stays end to end; the API server's
certificate names the address).
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from jovial_guard.policy.opa_process import REPO_ROOT

from .node_cluster import NodeCluster

DEPLOY = REPO_ROOT / "deploy" / "node-agent"
NAMESPACE = "jovial-guard-node"
NAME = "jovial-guard-node-agent"
SELECTOR = "app.kubernetes.io/name=jovial-guard-node-agent"
FIELD_MANAGER = "jovial-guard-tests"
#: Host paths the manifests may keep as they are: the host's cgroup tree, read-only.
KEPT_HOST_PATHS = {"/sys/fs/cgroup"}


def manifests(*names: str) -> list[dict[str, Any]]:
    """The documents of ``deploy/node-agent/NAME`` files, in order."""
    docs: list[dict[str, Any]] = []
    for name in names:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def for_this_node(docs: list[dict[str, Any]], *, image: str, host_paths: dict[str, Path],
                  same_path_inside: tuple[str, ...] = (), args: dict[str, str] | None = None,
                  env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The DaemonSet with this node's values; ``host_paths`` maps volume names to host paths,
    ``same_path_inside`` names volumes mounted at their host path, ``args`` replaces the
    values of existing ``--option=value`` arguments (an option the manifest lacks is an error)."""
    out = copy.deepcopy(docs)
    for doc in out:
        if doc["kind"] != "DaemonSet":
            continue
        pod = doc["spec"]["template"]["spec"]
        container = pod["containers"][0]
        container["image"] = image
        for volume in pod["volumes"]:
            if "hostPath" not in volume:
                continue
            if volume["name"] in host_paths:
                volume["hostPath"]["path"] = str(host_paths[volume["name"]])
            elif volume["hostPath"]["path"] not in KEPT_HOST_PATHS:
                raise AssertionError(f"host path volume {volume['name']} ({volume['hostPath']['path']}) has no "
                                     "mapping for the test node")
        for mount in container.get("volumeMounts", []):
            if mount["name"] in same_path_inside:
                mount["mountPath"] = str(host_paths[mount["name"]])
        wanted = dict(args or {})
        new_args = []
        for arg in container.get("args", []):
            option, _, _ = arg.partition("=")
            new_args.append(f"{option}={wanted.pop(option)}" if option in wanted else arg)
        if wanted:
            raise AssertionError(f"the manifest has no {', '.join(wanted)} argument")
        container["args"] = new_args
        container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in (env or {}).items())]
    return out


def apply(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    """Server-side apply of every document, as ``kubectl apply --server-side --force-conflicts``."""
    dynamic = DynamicClient(api)
    for doc in docs:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(body=doc, name=doc["metadata"]["name"],
                                   namespace=doc["metadata"].get("namespace"),
                                   field_manager=FIELD_MANAGER, force_conflicts=True)


def delete(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    """Delete what ``apply`` made, in reverse order; absent objects are fine."""
    dynamic = DynamicClient(api)
    for doc in reversed(docs):
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        try:
            resource.delete(name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace"))
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise


def agent_pods(core: client.CoreV1Api) -> list[Any]:
    return list(core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items)


def wait_rolled_out(core: client.CoreV1Api, *, timeout: float = 180, node: NodeCluster | None = None) -> Any:
    """The DaemonSet's one pod, Ready and of the current template (``kubectl rollout status``)."""
    apps = client.AppsV1Api(core.api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ds = apps.read_namespaced_daemon_set(NAME, NAMESPACE)
        st = ds.status
        if (st.observed_generation == ds.metadata.generation and st.desired_number_scheduled == 1
                and st.updated_number_scheduled == 1 and st.number_ready == 1):
            pods = [p for p in agent_pods(core) if p.metadata.deletion_timestamp is None]
            if len(pods) == 1 and any(c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []):
                return pods[0]
        time.sleep(1)
    pods = [(p.metadata.name, p.status.phase, p.status.container_statuses) for p in agent_pods(core)]
    events = [f"{e.involved_object.name}: {e.reason}: {e.message}" for e in core.list_namespaced_event(NAMESPACE).items]
    logs = agent_log(node, "*") if node else ""
    raise AssertionError(f"the DaemonSet did not roll out within {timeout}s: {pods}\nevents: {events[-10:]}\n"
                         f"agent log:\n{logs[-3000:]}")


def agent_log(node: NodeCluster | None, pod_name: str) -> str:
    """The agent container's output from the kubelet's pod log directory (every restart)."""
    if node is None:
        return ""
    found = sorted((node.dir / "pod-logs").glob(f"{NAMESPACE}_{pod_name}_*/node-agent/*.log"))
    return "".join(p.read_text(errors="replace") for p in found)


def attestations(log: str) -> list[dict[str, Any]]:
    """The attestation events the agent logged (``INFO attestation {json}``)."""
    out = []
    for line in log.splitlines():
        _, marker, doc = line.partition("INFO attestation ")
        if marker:
            out.append(json.loads(doc))
    return out


class ApiForwarder:
    """TCP relay from ``address``:``port`` to the API server on loopback (what kube-proxy
    does for the ``kubernetes`` Service); closed with :meth:`close`. With ``target`` it
    relays to whatever (host, port) that returns when a connection arrives instead, e.g. a
    Service's current endpoint; with ``listen_port`` it listens on that port."""

    def __init__(self, address: str, target_port: int = 0, *, listen_port: int = 0,
                 target: Callable[[], tuple[str, int] | None] | None = None) -> None:
        self.target_port = target_port
        self.target = target or (lambda: ("127.0.0.1", self.target_port))
        self.server = socket.create_server((address, listen_port))
        self.port = int(self.server.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="api-forwarder", daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            try:
                where = self.target()
                if where is None:
                    raise OSError("no endpoint")
                upstream = socket.create_connection(where, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop.set()
        self.server.close()
