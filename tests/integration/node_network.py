"""The single-node cluster's network: a node address and a pod bridge that lead nowhere.

The kubelet's node IP may be neither loopback nor the machine's own address (that would
expose it on the network), and dummy links are unavailable here, so the node address is a
/32 on an empty bridge. Pods join a second bridge through Debian's CNI ``bridge`` plugin
with ``isGateway: false`` and ``ipMasq: false``: no default route, no NAT, and the host's
``ip_forward`` stays 0, so nothing a pod sends leaves the machine. The host holds one
address on the pod bridge (below IPAM's ``rangeStart``) so it can reach pods by IP.

Both bridges get per-run names and a /24 no other link uses, and are deleted on teardown.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_NET = ipaddress.ip_network("10.213.0.0/16")
POD_NET = ipaddress.ip_network("10.214.0.0/16")


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _used_addresses() -> set[ipaddress.IPv4Address]:
    used = set()
    for link in json.loads(_ip("-j", "addr") or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                used.add(ipaddress.IPv4Address(info["local"]))
    return used


def link_names() -> set[str]:
    return {link["ifname"] for link in json.loads(_ip("-j", "link") or "[]")}


@dataclass
class NodeNetwork:
    """Two bridges and their addresses; ``create`` then ``remove`` (idempotent)."""

    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    index: int = 0
    created: list[str] = field(default_factory=list)

    @property
    def node_bridge(self) -> str:
        return f"jgn{self.suffix}"

    @property
    def pod_bridge(self) -> str:
        return f"jgp{self.suffix}"

    @property
    def node_ip(self) -> str:
        return str(NODE_NET.network_address + self.index * 256 + 1)

    @property
    def pod_subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{POD_NET.network_address + self.index * 256}/24")

    @property
    def host_pod_ip(self) -> str:
        return str(self.pod_subnet.network_address + 1)

    def create(self) -> NodeNetwork:
        used = _used_addresses()
        free = [i for i in range(1, 255)
                if NODE_NET.network_address + i * 256 + 1 not in used
                and POD_NET.network_address + i * 256 + 1 not in used]
        if not free:
            raise RuntimeError("no free /24 in 10.213.0.0/16 and 10.214.0.0/16 for the test node")
        self.index = free[secrets.randbelow(len(free))]
        for name, address in ((self.node_bridge, f"{self.node_ip}/32"),
                              (self.pod_bridge, f"{self.host_pod_ip}/24")):
            _ip("link", "add", name, "type", "bridge")
            self.created.append(name)
            _ip("addr", "add", address, "dev", name)
            _ip("link", "set", name, "up")
        return self

    def cni_conflist(self, ipam_dir: Path, *, chain: tuple[dict[str, Any], ...] = (),
                     routes: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
        """The pod network: one bridge, host-local addresses, no gateway, no masquerade;
        ``chain`` plugins run after the bridge, ``routes`` are given to every pod."""
        subnet = self.pod_subnet
        return {
            "cniVersion": "1.0.0",
            "name": f"jg-pods-{self.suffix}",
            "plugins": [{
                "type": "bridge",
                "bridge": self.pod_bridge,
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": str(subnet),
                                 "rangeStart": str(subnet.network_address + 10),
                                 "rangeEnd": str(subnet.network_address + 250)}]],
                    **({"routes": list(routes)} if routes else {}),
                },
            }, *chain],
        }

    def remove(self) -> None:
        existing = link_names()
        for name in reversed(self.created):
            if name in existing:
                _ip("link", "del", name)
        self.created.clear()
