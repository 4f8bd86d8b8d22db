"""Test hosts on the node's pod bridge: each a network namespace with an HTTP server on port 80.

What the egress tests aim at, all on this machine: an allowlisted "archive", a host that no
group may reach, and a cloud metadata stand-in that answers on 169.254.169.254 (the pods get a
route to it through the stand-in, as a cloud's pods reach the real one through their gateway).
Without egress rules every one of them is reachable from a pod; the rules must make the
difference. Host ends of the veths end with the cluster's link suffix, so the cluster's
``leftovers()`` sees any that survive; ``remove`` deletes namespaces and servers.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .node_network import NodeNetwork

METADATA = "169.254.169.254"
#: Host number on the pod /24 (below IPAM's rangeStart, .10) of each test host.
HOSTS = {"archive": 3, "other": 4, "metadata": 5}


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


@dataclass
class TestHosts:
    network: NodeNetwork
    workdir: Path
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    __test__ = False  # not a pytest class

    def address(self, name: str) -> str:
        return str(self.network.pod_subnet.network_address + HOSTS[name])

    def routes(self) -> tuple[dict[str, str], ...]:
        """The pod route to the metadata stand-in (IPAM hands it to every pod)."""
        return ({"dst": f"{METADATA}/32", "gw": self.address("metadata")},)

    def create(self) -> TestHosts:
        prefix = self.network.pod_subnet.prefixlen
        for index, name in enumerate(HOSTS):
            ns, link = f"jgth-{self.network.suffix}-{name}", f"jgt{index}{self.network.suffix}"
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", link, "master", self.network.pod_bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address(name)}/{prefix}", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            bind = self.address(name)
            if name == "metadata":
                _run("ip", "-n", ns, "addr", "add", f"{METADATA}/32", "dev", "lo")
                bind = "0.0.0.0"
            root = self.workdir / name
            root.mkdir(parents=True, exist_ok=True)
            (root / "index.html").write_text(f"{name}\n")
            log = open(self.workdir / f"{name}.log", "wb")
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "--bind", bind, "80"],
                cwd=root, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()
        time.sleep(1)
        return self

    def remove(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.servers.clear()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()


def in_subnet(address: str, network: NodeNetwork) -> bool:
    return ipaddress.ip_address(address) in network.pod_subnet
