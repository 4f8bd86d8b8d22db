"""Golden tests for the egress nftables renderer (pure; no namespaces needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.decision import Egress, EgressRule
from jovial_guard.hardening.egress import EgressNamespaces
from jovial_guard.hardening.egress_core import EgressRuleInvalid, routes_for
from jovial_guard.hardening.egress_nft import render_nft_ruleset, render_router_ruleset

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "egress"


def _rule(doc: dict[str, Any]) -> EgressRule:
    return EgressRule(cidr=doc["cidr"], ports=tuple(doc.get("ports", [])),
                      protocol=doc.get("protocol", "tcp"), comment=doc.get("comment", ""))


def _egress(doc: dict[str, Any]) -> Egress:
    return Egress(allow=tuple(_rule(r) for r in doc["allow"]), dns=tuple(doc["dns"]),
                  hub=tuple(_rule(r) for r in doc["hub"]), blocked=tuple(doc["blocked"]))


def _cases() -> dict[str, dict[str, Any]]:
    return json.loads((VECTORS / "cases.json").read_text())["cases"]


def _render(case: dict[str, Any]) -> str:
    return render_nft_ruleset(_egress(case["egress"]), hub=[_rule(r) for r in case["hub"]],
                              inbound_from=case["inbound_from"])


@pytest.mark.parametrize("name", sorted(_cases()))
def test_golden(name: str) -> None:
    assert _render(_cases()[name]) == (VECTORS / f"{name}.nft").read_text()


def _output_chain(text: str) -> list[str]:
    chain = text.split("chain output {")[1].split("chain input {")[0].rsplit("}", 1)[0]
    return [line.strip() for line in chain.splitlines() if line.strip()]


def test_default_deny_and_metadata_always_blocked() -> None:
    out = _output_chain(_render(_cases()["default-deny"]))
    assert out[0].endswith("policy drop;")
    assert out[-1].startswith("counter reject")
    assert any(line.startswith("ip daddr 169.254.169.254/32") and "reject" in line for line in out)
    accepts = [line for line in out if line.endswith("accept") or "accept comment" in line]
    assert [a for a in accepts if "daddr" in a] == [
        'ip daddr 10.213.255.253/32 tcp dport { 8081 } counter accept comment "jupyterhub api"'
    ]


def test_most_specific_wins_and_broad_allow_stays_behind_blocked() -> None:
    out = _output_chain(_render(_cases()["broad-allow-never-opens-blocked"]))
    index = {key: i for i, line in enumerate(out) for key in (
        "169.254.169.254/32", "169.254.0.0/16 meta", "blocked 169.254.0.0/16", "10.0.0.0/8",
        "0.0.0.0/0") if key in line}
    assert index["169.254.169.254/32"] < index["169.254.0.0/16 meta"] < index["blocked 169.254.0.0/16"]
    assert index["10.0.0.0/8"] < index["0.0.0.0/0"]


def test_comments_cannot_inject_rules() -> None:
    text = _render(_cases()["broad-allow-never-opens-blocked"])
    assert 'comment "any https quoted drop"' in text
    assert text.count('"') % 2 == 0


def test_metadata_opens_only_when_allowlisted_exactly() -> None:
    out = _output_chain(_render(_cases()["metadata-allowlisted-exactly"]))
    assert not any("169.254.169.254/32" in line and "reject" in line for line in out)
    assert any("169.254.169.254/32 tcp dport { 80 }" in line for line in out)


@pytest.mark.parametrize(
    ("egress", "match"),
    [
        (Egress(allow=(EgressRule("not-a-cidr"),)), "not a CIDR"),
        (Egress(allow=(EgressRule("10.0.0.0/8", ports=(0,)),)), "not in 1..65535"),
        (Egress(allow=(EgressRule("10.0.0.0/8", ports=(70000,)),)), "not in 1..65535"),
        (Egress(allow=(EgressRule("10.0.0.0/8", protocol="icmp"),)), "protocol"),
        (Egress(dns=("resolver.example",)), "not a CIDR"),
        (Egress(blocked=("10.0.0.0/33",)), "not a CIDR"),
    ],
)
def test_bad_rules_are_refused(egress: Egress, match: str) -> None:
    with pytest.raises(EgressRuleInvalid, match=match):
        render_nft_ruleset(egress, hub=[])


def test_routes_only_to_allowed_ipv4_destinations() -> None:
    egress = _egress(_cases()["astro-group"]["egress"])
    hub = [EgressRule("10.213.255.253/32", (8081,))]
    assert routes_for(egress, hub=hub) == ["10.213.250.0/24", "10.213.250.53/32", "10.213.255.253/32"]
    assert "0.0.0.0/0" not in routes_for(Egress(), hub=hub)


def test_router_rules_isolate_users() -> None:
    text = render_router_ruleset(uplink="host0")
    assert 'iifname "u*" oifname "u*" counter drop' in text
    assert 'iifname "host0" oifname "u*" tcp dport 8888 accept' in text
    # The router's own interface names never match the user/service wildcards.
    assert not "host0".startswith(("u", "s"))


def test_topology_addresses() -> None:
    egress = EgressNamespaces("jg")
    assert egress.hub_address == "10.213.255.253"
    assert egress.hub_rule(8081) == EgressRule("10.213.255.253/32", (8081,), "tcp", "jupyterhub api")
    with pytest.raises(EgressRuleInvalid):
        egress.user_ns("Alice;rm")
    with pytest.raises(EgressRuleInvalid):
        EgressNamespaces("JG")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    for case_name, case in _cases().items():
        (VECTORS / f"{case_name}.nft").write_text(_render(case))
        print(f"wrote {case_name}.nft")
