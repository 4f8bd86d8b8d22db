"""One decision's egress, two enforcement points: the nftables ruleset and the NetworkPolicy
rendered from the same Egress allow and refuse exactly the same destinations.

Each case of ``tests/vectors/egress/cases.json`` (plus the cases below) goes through both
renderers. The NetworkPolicy is pinned as a golden file beside the ``.nft`` one. Then a
probe set (every CIDR's first, middle and last address, well-known outside addresses, each
listed port and a few others, tcp and udp) is judged twice: by reading the nftables output
chain top-down (first match wins, as the kernel does) and by NetworkPolicy semantics (any
rule whose ipBlock contains the destination, outside its excepts, on a listed port).
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import Egress, EgressRule
from jovial_guard.hardening.egress_core import EgressRuleInvalid
from jovial_guard.hardening.egress_netpol import render_decision_policy
from jovial_guard.hardening.egress_nft import render_nft_ruleset

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "egress"
OUTSIDE = ("8.8.8.8", "1.1.1.1", "10.1.2.3", "169.254.169.254", "169.254.1.1", "192.168.1.1",
           "2001:db8::1", "fd00:ec2::254", "fc00::1")
EXTRA_CASES: dict[str, dict[str, Any]] = {
    "nested-allow-blocked-allow": {
        "egress": {
            "allow": [{"cidr": "10.0.0.0/8", "ports": [443], "protocol": "tcp", "comment": "wide"},
                      {"cidr": "10.5.5.0/24", "ports": [], "protocol": "any", "comment": "inner"}],
            "dns": ["10.9.9.9"],
            "hub": [],
            "blocked": ["10.5.0.0/16", "10.0.0.0/8"],
        },
        "hub": [{"cidr": "10.213.255.253/32", "ports": [8081], "protocol": "tcp", "comment": "jupyterhub api"}],
        "inbound_from": [],
    },
    "ipv6-and-udp": {
        "egress": {
            "allow": [{"cidr": "::/0", "ports": [443], "protocol": "udp", "comment": "quic"},
                      {"cidr": "2001:db8::/32", "ports": [22], "protocol": "tcp", "comment": "ssh"}],
            "dns": [],
            "hub": [],
            "blocked": ["fc00::/7", "2001:db8:1::/48"],
        },
        "hub": [],
        "inbound_from": [],
    },
}


def _rule(doc: dict[str, Any]) -> EgressRule:
    return EgressRule(cidr=doc["cidr"], ports=tuple(doc.get("ports", [])),
                      protocol=doc.get("protocol", "tcp"), comment=doc.get("comment", ""))


def _egress(doc: dict[str, Any]) -> Egress:
    return Egress(allow=tuple(_rule(r) for r in doc["allow"]), dns=tuple(doc["dns"]),
                  hub=tuple(_rule(r) for r in doc["hub"]), blocked=tuple(doc["blocked"]))


def _cases() -> dict[str, dict[str, Any]]:
    cases = dict(json.loads((VECTORS / "cases.json").read_text())["cases"])
    cases.update(EXTRA_CASES)
    return cases


def _netpol(case: dict[str, Any]) -> dict[str, Any]:
    return render_decision_policy(_egress(case["egress"]), name="jg-user", namespace="jhub",
                                  pod_labels={"hub.jupyter.org/username": "user"},
                                  hub=[_rule(r) for r in case["hub"]])


def _nft(case: dict[str, Any]) -> str:
    return render_nft_ruleset(_egress(case["egress"]), hub=[_rule(r) for r in case["hub"]],
                              inbound_from=case["inbound_from"])


_LINE = re.compile(r"^(ip6?) daddr (\S+)(?: (tcp|udp) dport \{ ([0-9, ]+) \}| meta l4proto (tcp|udp))?"
                   r" counter (accept|reject)")


def nft_allows(ruleset: str, address: str, port: int, proto: str) -> bool:
    """The output chain's verdict for one packet, first match wins (as the kernel reads it)."""
    chain = ruleset.split("chain output {")[1].split("chain input {")[0]
    ip = ipaddress.ip_address(address)
    for raw in chain.splitlines():
        match = _LINE.match(raw.strip())
        if not match:
            continue
        family, cidr, dport_proto, ports, l4proto, verdict = match.groups()
        if (family == "ip") != (ip.version == 4) or ip not in ipaddress.ip_network(cidr):
            continue
        if dport_proto and (dport_proto != proto or port not in {int(p) for p in ports.split(",")}):
            continue
        if l4proto and l4proto != proto:
            continue
        return verdict == "accept"
    return False  # the chain's last rule: default deny


def netpol_allows(policy: dict[str, Any], address: str, port: int, proto: str) -> bool:
    """NetworkPolicy semantics: any egress rule admitting the destination and port."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        ports_ok = any(p["protocol"] == proto.upper() and p.get("port") in (None, port)
                       for p in rule["ports"])
        for peer in rule["to"]:
            block = peer["ipBlock"]
            net = ipaddress.ip_network(block["cidr"])
            if ip.version != net.version or ip not in net:
                continue
            if any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                continue
            if ports_ok:
                return True
    return False


def _probes(case: dict[str, Any]) -> list[tuple[str, int, str]]:
    egress = case["egress"]
    cidrs = [r["cidr"] for r in egress["allow"] + egress["hub"] + case["hub"]]
    cidrs += list(egress["dns"]) + list(egress["blocked"])
    addresses = set(OUTSIDE)
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        for ip in (net.network_address, net.network_address + net.num_addresses // 2,
                   net.broadcast_address):
            addresses.add(str(ip))
    ports = {22, 53, 80, 443, 8081, 9999}
    for r in egress["allow"] + egress["hub"] + case["hub"]:
        ports |= set(r.get("ports", []))
    return [(a, p, proto) for a in sorted(addresses) for p in sorted(ports) for proto in ("tcp", "udp")]


@pytest.mark.parametrize("name", sorted(_cases()))
def test_both_renderers_agree_on_every_probe(name: str) -> None:
    case = _cases()[name]
    ruleset, policy = _nft(case), _netpol(case)
    disagree = [(a, p, proto, nft_allows(ruleset, a, p, proto))
                for a, p, proto in _probes(case)
                if nft_allows(ruleset, a, p, proto) != netpol_allows(policy, a, p, proto)]
    assert disagree == [], f"nftables and NetworkPolicy differ (address, port, proto, nft): {disagree[:10]}"


@pytest.mark.parametrize("name", sorted(json.loads((VECTORS / "cases.json").read_text())["cases"]))
def test_netpol_golden(name: str) -> None:
    expected = json.loads((VECTORS / f"{name}.netpol.json").read_text())
    assert _netpol(_cases()[name]) == expected


def test_the_probe_judges_can_tell_allowed_from_refused() -> None:
    case = _cases()["astro-group"]
    ruleset, policy = _nft(case), _netpol(case)
    for judge, rendered in ((nft_allows, ruleset), (netpol_allows, policy)):
        assert judge(rendered, "10.213.250.7", 443, "tcp")  # type: ignore[operator]
        assert not judge(rendered, "10.213.250.7", 22, "tcp")  # type: ignore[operator]
        assert not judge(rendered, "169.254.169.254", 80, "tcp")  # type: ignore[operator]
        assert not judge(rendered, "8.8.8.8", 443, "tcp")  # type: ignore[operator]


def test_metadata_allow_means_the_same_on_both() -> None:
    case = _cases()["metadata-allowlisted-exactly"]
    assert nft_allows(_nft(case), "169.254.169.254", 80, "tcp")
    assert netpol_allows(_netpol(case), "169.254.169.254", 80, "tcp")
    assert not nft_allows(_nft(case), "169.254.169.254", 81, "tcp")
    assert not netpol_allows(_netpol(case), "169.254.169.254", 81, "tcp")


@pytest.mark.parametrize("egress", [
    Egress(hub=(EgressRule("0.0.0.0/0", (8081,)),)),
    Egress(dns=("169.254.0.0/16",)),
])
def test_a_hub_or_dns_range_that_would_open_a_blocked_one_is_refused_by_both(egress: Egress) -> None:
    with pytest.raises(EgressRuleInvalid, match="contains the blocked range"):
        render_nft_ruleset(egress, hub=[])
    with pytest.raises(EgressRuleInvalid, match="contains the blocked range"):
        render_decision_policy(egress, name="x", namespace="jhub", pod_labels={})


if __name__ == "__main__" and "--regenerate" in sys.argv:
    for case_name, case_doc in json.loads((VECTORS / "cases.json").read_text())["cases"].items():
        (VECTORS / f"{case_name}.netpol.json").write_text(json.dumps(_netpol(case_doc), indent=2) + "\n")
        print(f"wrote {case_name}.netpol.json")
