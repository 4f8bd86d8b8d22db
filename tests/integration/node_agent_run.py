"""The node agent as the tests run it: a host process against the cluster's kubelet and API.

On a real cluster it is a DaemonSet (deploy/node-agent/); here it runs on the host, with the
cluster's kubelet root and admin kubeconfig, exactly as ``jovial-guard node-agent``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jovial_guard.processes import stop_group

from .node_cluster import NODE_NAME, NodeCluster


def agent_argv(node: NodeCluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jovial_guard", "node-agent", "--node-name", NODE_NAME,
            "--kubelet-root", str(node.kubelet_root), "--kubeconfig", str(node.kubeconfig), *extra]


def run_agent_once(node: NodeCluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_argv(node, "--once"), capture_output=True, text=True, timeout=120, check=False)


class AgentLoop:
    """The agent's loop in the background (``--interval``), stopped with SIGTERM."""

    def __init__(self, node: NodeCluster, log: Path, *, interval: float = 1, extra: tuple[str, ...] = ()) -> None:
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(agent_argv(node, "--interval", str(interval), *extra), stdout=self._out,
                                     stderr=self._out, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> int:
        stop_group(self.proc, grace=20)
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")
