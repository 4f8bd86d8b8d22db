"""Egress inside each notebook pod's network namespace, asked for by the CNI plugin.

Why on the node: NetworkPolicies need a CNI that enforces them; this node's rules do not. The
chained plugin (:mod:`.cni_plugin`) hands the agent each new pod's network namespace before
any of its containers starts. For a notebook pod (what the webhook recorded from the policy's
decision: the annotation ``jovial-guard.io/notebook: "true"``, so a pod that is a notebook only by
its name or claims counts; or the selector the rendered NetworkPolicies use,
``settings.hub.notebook_labels``, for a pod admitted before the webhook recorded it) the agent
renders the pod's egress with
the embedded mode's renderer (:func:`~jovial_guard.hardening.egress_nft.render_nft_ruleset`)
from ``settings.egress`` for the groups the webhook labelled the pod with
(``egress.jovial-guard.io/<group>: allow``, labels only the webhook may set), plus the hub's
address on the pod network, and loads it inside that namespace. Other pods are passed through.

Fail closed: a pod the API does not know (or whose uid differs: a recreated pod), an
unreadable request, a renderer or ``nft`` error: the answer is a refusal, the plugin fails and
the pod does not start. The socket is the agent's own (mode 0600); only uid 0 may talk to it.
"""

from __future__ import annotations

import array
import fcntl
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..admission.records import NOTEBOOK_ANNOTATION
from ..decision import EgressRule
from ..errors import JovialGuardError, Misconfigured
from ..hardening.egress_core import egress_from_settings
from ..hardening.egress_netpol import GROUP_LABEL_PREFIX
from ..hardening.egress_nft import render_nft_ruleset
from ..hardening.netns import apply_ruleset_fd
from .readiness import PING

log = logging.getLogger("jovial_guard.node.egress")
MAX_REQUEST = 4096
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class EgressSettings:
    """What the agent renders from: the policy data's sections and the node's hub address."""

    egress: Mapping[str, Any]
    notebook_labels: Mapping[str, str]
    hub: tuple[EgressRule, ...]
    ingress_from: tuple[str, ...]
    notebook_port: int = 8888

    @classmethod
    def load(cls, data_json: Path, *, hub: Sequence[str], hub_ports: Sequence[int], ingress_from: Sequence[str],
             notebook_port: int) -> EgressSettings:
        """From policies/data.json; ``hub`` are the hub's addresses as the pods reach them."""
        try:
            settings = json.loads(Path(data_json).read_text())["settings"]
            section, labels = settings["egress"], settings["hub"]["notebook_labels"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Misconfigured(f"policy data {data_json}: no settings.egress and settings.hub.notebook_labels ({exc})") from None
        if not isinstance(labels, dict) or not labels:
            raise Misconfigured(f"policy data {data_json}: settings.hub.notebook_labels must name at least one label")
        rules = tuple(EgressRule(cidr=address, ports=tuple(hub_ports), comment="hub API") for address in hub)
        made = cls(egress=section, notebook_labels=dict(labels), hub=rules, ingress_from=tuple(ingress_from or hub),
                   notebook_port=notebook_port)
        made.ruleset({})  # every group's rules must render before the agent serves
        for group in section.get("groups", {}) if isinstance(section, dict) else ():
            made.ruleset({GROUP_LABEL_PREFIX + group: "allow"})
        return made

    def is_notebook(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> bool:
        """The webhook's record of the policy's decision, or the notebook labels (either makes
        a notebook: the safe side is more pods under notebook rules)."""
        if (annotations or {}).get(NOTEBOOK_ANNOTATION) == "true":
            return True
        return all(labels.get(key) == value for key, value in self.notebook_labels.items())

    def ruleset(self, labels: Mapping[str, str]) -> str:
        """The nftables ruleset of a notebook pod carrying ``labels`` (pure)."""
        groups = ("*", *sorted(key[len(GROUP_LABEL_PREFIX):] for key, value in labels.items()
                               if key.startswith(GROUP_LABEL_PREFIX) and value == "allow"))
        egress = egress_from_settings(self.egress, groups=groups)
        return render_nft_ruleset(egress, hub=self.hub, inbound_from=self.ingress_from,
                                  notebook_port=self.notebook_port)


PodLookup = Callable[[str, str], "dict[str, Any] | None"]


def api_pod_lookup(api: Any) -> PodLookup:
    """``(namespace, name) -> {"uid", "labels", "annotations", "node"}`` from the API; None when absent."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)

    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise Misconfigured(f"the API server refused to read pod {namespace}/{name}: {exc.status} {exc.reason}") from None
        meta, spec = pod.metadata, pod.spec
        if meta is None or spec is None:
            return None
        return {"uid": meta.uid, "labels": dict(meta.labels or {}), "annotations": dict(meta.annotations or {}),
                "node": spec.node_name}

    return lookup


class EgressAgent:
    """Decides and applies one pod's rules; the socket server below calls :meth:`handle`."""

    def __init__(self, settings: EgressSettings, lookup: PodLookup, *, node_name: str) -> None:
        self.settings = settings
        self.lookup = lookup
        self.node_name = node_name

    def handle(self, request: Mapping[str, Any], netns_fd: int) -> dict[str, Any]:
        namespace, name = str(request.get("namespace", "")), str(request.get("pod", ""))
        if request.get("v") != 1 or request.get("command") != "ADD" or not namespace or not name:
            return {"ok": False, "error": "malformed request (expected v 1, command ADD, namespace and pod)"}
        if not _is_network_namespace(netns_fd):
            return {"ok": False, "error": "the descriptor passed is not a network namespace"}
        try:
            pod = self.lookup(namespace, name)
        except (JovialGuardError, OSError) as exc:
            return {"ok": False, "error": f"cannot read pod {namespace}/{name}: {exc}"}
        if pod is None or (request.get("uid") and pod["uid"] != request["uid"]):
            return {"ok": False, "error": f"pod {namespace}/{name} (uid {request.get('uid')}) is not in the API"}
        if pod["node"] != self.node_name:
            return {"ok": False, "error": f"pod {namespace}/{name} is bound to {pod['node']!r}, not {self.node_name!r}"}
        if not self.settings.is_notebook(pod["labels"], pod.get("annotations")):
            return {"ok": True, "applied": "none: not a notebook pod"}
        try:
            apply_ruleset_fd(netns_fd, self.settings.ruleset(pod["labels"]), what=f"egress rules of {namespace}/{name}")
        except JovialGuardError as exc:
            log.error("%s", exc)
            return {"ok": False, "error": str(exc)}
        groups = sorted(k[len(GROUP_LABEL_PREFIX):] for k in pod["labels"] if k.startswith(GROUP_LABEL_PREFIX))
        log.info("egress rules loaded for %s/%s (groups: %s)", namespace, name, ", ".join(groups) or "none")
        return {"ok": True, "applied": "notebook", "groups": groups}


def _is_network_namespace(fd: int) -> bool:
    """``ioctl(NS_GET_NSTYPE)`` says CLONE_NEWNET (any other file or namespace: False)."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


class _Handler(socketserver.BaseRequestHandler):
    server: EgressServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        fds: list[int] = []
        try:
            uid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != 0:
                answer: dict[str, Any] = {"ok": False, "error": f"uid {uid} may not ask for egress rules"}
            else:
                data, fds = _receive(sock)
                request = json.loads(data)
                if request == PING and not fds:
                    answer = {"ok": True, "ping": "pong"}
                elif len(fds) != 1 or not isinstance(request, dict):
                    answer = {"ok": False, "error": "expected one JSON request and one network namespace descriptor"}
                else:
                    answer = self.server.agent.handle(request, fds[0])
        except (OSError, ValueError) as exc:
            answer = {"ok": False, "error": f"unreadable request: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
        chunk, ancdata, _flags, _addr = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not chunk:
            break
        data += chunk
    return data, list(fds)


class EgressServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The agent's unix socket (mode 0600 in a 0700 directory)."""

    daemon_threads = True

    def __init__(self, path: Path, agent: EgressAgent) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        self.agent = agent
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        self.path = path

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="egress-socket", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


def install_plugin(bin_dir: Path, *, python: str = "/usr/bin/python3") -> Path:
    """Write the CNI plugin into the node's CNI directory as an executable script."""
    from . import cni_plugin

    source = Path(cni_plugin.__file__).read_text()
    target = bin_dir / cni_plugin.PLUGIN_TYPE
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(f"#!{python} -I\n{source}")
        tmp.chmod(0o755)
        tmp.replace(target)
    except OSError as exc:
        raise Misconfigured(f"cannot install the CNI plugin into {bin_dir}: {exc}") from None
    return target
