"""The chained CNI plugin ``jovial-guard-egress``: a pod's egress rules before it starts.

The container runtime runs the CNI chain when it creates a pod's sandbox, before any
container of the pod starts. This plugin comes after the network plugin (``bridge``, or the
cluster's own): on ``ADD`` it opens the pod's network namespace (``CNI_NETNS``) and hands the
open descriptor, with the pod's namespace, name and uid (``CNI_ARGS``), to the node agent over
its unix socket (SCM_RIGHTS). The agent decides and loads the nftables rules inside that
namespace and answers. Anything but a positive answer (no agent, a refusal, a timeout) is a
CNI error: the runtime tears the sandbox down and the pod does not start (fail closed).

Configuration (one entry of the conflist's ``plugins``, after the network plugin)::

    {"type": "jovial-guard-egress", "socket": "/run/jovial-guard/node/egress.sock",
     "namespaces": ["jhub"]}

``namespaces`` limits the plugin to the guarded namespaces (empty or absent: every pod), so
other namespaces' pods do not depend on the agent. ``DEL`` needs nothing undone (the rules
live in the namespace being destroyed) and always succeeds, so a pod can always be removed.

Standard library only, no project imports: the agent installs this file into the node's CNI
directory as a script, and the runtime executes it with the node's own Python.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

PLUGIN_TYPE = "jovial-guard-egress"
PROTOCOL_VERSION = 1
SUPPORTED = ["0.4.0", "1.0.0", "1.1.0"]
TIMEOUT = 20.0
#: CNI's well-known error codes: 7 invalid network config, 11 try again later.
INVALID_CONFIG = 7
TRY_AGAIN = 11


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def cni_args(raw: str) -> dict[str, str]:
    """``K8S_POD_NAMESPACE=jhub;K8S_POD_NAME=jupyter-alice;...`` as a dict."""
    out = {}
    for part in raw.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def ask_agent(path: str, request: dict[str, Any], netns_fd: int | None, *,
              timeout: float = TIMEOUT) -> dict[str, Any]:
    """One request, with the namespace's descriptor attached when given; the agent's JSON
    answer (ValueError when there is none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        line = json.dumps(request).encode() + b"\n"
        if netns_fd is None:
            sock.sendall(line)
        else:
            socket.send_fds(sock, [line], [netns_fd])
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data or b"null")
    if not isinstance(answer, dict):
        raise ValueError("the agent closed the connection without an answer")
    return answer


def add(conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Ask the agent for the pod's rules; the previous plugin's result, passed on."""
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise PluginError(INVALID_CONFIG, f"{PLUGIN_TYPE} must be chained after a network plugin (no prevResult)")
    args = cni_args(env.get("CNI_ARGS", ""))
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    guarded = conf.get("namespaces") or []
    if guarded and namespace not in guarded:
        return prev
    path = conf.get("socket")
    if not isinstance(path, str) or not path:
        raise PluginError(INVALID_CONFIG, f"{PLUGIN_TYPE}: 'socket' (the node agent's unix socket) is required")
    if not namespace or not name:
        raise PluginError(INVALID_CONFIG, f"{PLUGIN_TYPE}: CNI_ARGS names no pod (K8S_POD_NAMESPACE/K8S_POD_NAME)")
    request = {"v": PROTOCOL_VERSION, "command": "ADD", "namespace": namespace, "pod": name,
               "uid": args.get("K8S_POD_UID", ""), "container_id": env.get("CNI_CONTAINERID", "")}
    try:
        fd = os.open(env.get("CNI_NETNS", ""), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PluginError(INVALID_CONFIG, f"{PLUGIN_TYPE}: cannot open the pod's network namespace: {exc}") from None
    try:
        answer = ask_agent(path, request, fd)
    except (OSError, ValueError) as exc:
        raise PluginError(TRY_AGAIN, f"{PLUGIN_TYPE}: the node agent did not apply egress rules for "
                          f"{namespace}/{name} ({exc}); the pod does not start without them") from None
    finally:
        os.close(fd)
    if answer.get("ok") is not True:
        raise PluginError(TRY_AGAIN, f"{PLUGIN_TYPE}: the node agent refused {namespace}/{name}: "
                          f"{answer.get('error', 'no reason given')}")
    return prev


def main() -> int:
    env = dict(os.environ)
    command = env.get("CNI_COMMAND", "")
    version = "1.0.0"
    try:
        conf = json.loads(sys.stdin.read() or "{}") if command != "VERSION" else {}
        version = str(conf.get("cniVersion", version))
        if command == "VERSION":
            result: dict[str, Any] | None = {"cniVersion": version, "supportedVersions": SUPPORTED}
        elif command == "ADD":
            result = add(conf, env)
        elif command in ("DEL", "CHECK", "GC", "STATUS"):
            result = None
        else:
            raise PluginError(4, f"{PLUGIN_TYPE}: unknown CNI_COMMAND {command!r}")
    except PluginError as exc:
        print(json.dumps({"cniVersion": version, "code": exc.code, "msg": exc.msg, "details": exc.details}))
        return 1
    except ValueError as exc:
        print(json.dumps({"cniVersion": version, "code": 6, "msg": f"{PLUGIN_TYPE}: bad configuration: {exc}"}))
        return 1
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
