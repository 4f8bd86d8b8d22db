"""NetworkPolicies for user pods, rendered from the same egress data as the embedded mode.

The embedded (single machine) mode turns ``data.settings.egress`` (policies/data.json),
via the policy's ``Egress`` spec, into nftables rules in the notebook's network namespace.
On Kubernetes the same data becomes NetworkPolicies, so both enforcement points allow
exactly the same destinations:

* ``jovial-guard-default-deny``: every notebook pod, egress (and ingress) default deny;
* ``jovial-guard-dns``: DNS to the cluster resolver (kube-system/kube-dns) + ``egress.dns``;
* ``jovial-guard-hub``: the hub API (hub pod, port 8081) + ``egress.hub`` rules;
* ``jovial-guard-ingress-from-proxy``: only the proxy (and hub) may reach the notebook port;
* ``jovial-guard-egress-all``: the ``"*"`` group's allowlist, for every notebook;
* ``jovial-guard-egress-<group>``: each group's allowlist, for pods carrying the label
  ``egress.jovial-guard.io/<group>: allow`` (set by the hub's ``modify_pod_hook``).

NetworkPolicies only add allows, so "blocked" (cloud metadata, private ranges) is
expressed as ``except`` on every allowed CIDR that contains a blocked range, and a blocked
range is reachable only when a group's rule names a destination *inside* it explicitly
(the same rule as policies/egress). Pure functions; no I/O except :func:`load_settings`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..decision import Egress, EgressRule

#: Labels of z2jh's pods.
NOTEBOOK_SELECTOR = {"component": "singleuser-server"}
HUB_SELECTOR = {"component": "hub"}
PROXY_SELECTOR = {"component": "proxy"}
GROUP_LABEL_PREFIX = "egress.jovial-guard.io/"
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
#: Cloud metadata endpoints: blocked whatever the data says (credentials live there).
ALWAYS_BLOCKED = ("169.254.169.254/32", "fd00:ec2::254/128")


class EgressDataError(ValueError):
    """policies/data.json's egress settings cannot be rendered (names what is wrong)."""


def group_label(group: str) -> str | None:
    """The pod label key that opts a pod into ``group``'s allowlist (None if unrepresentable)."""
    return GROUP_LABEL_PREFIX + group if _LABEL_NAME.match(group) else None


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise EgressDataError(f"egress CIDR {cidr!r} is not a network: {exc}") from exc


def ip_block(cidr: str, blocked: Iterable[str]) -> dict[str, Any]:
    """``ipBlock`` for ``cidr`` with every blocked range strictly inside it excepted."""
    net = _network(cidr)
    for meta in ALWAYS_BLOCKED:
        meta_net = _network(meta)
        if meta_net.version == net.version and net.subnet_of(meta_net):  # type: ignore[arg-type]
            raise EgressDataError(f"egress CIDR {cidr} is a cloud metadata endpoint, which is never allowed")
    excepts = sorted(
        str(b)
        for b in {_network(x) for x in [*blocked, *ALWAYS_BLOCKED]}
        if b.version == net.version and b != net and b.subnet_of(net)  # type: ignore[arg-type]
    )
    block: dict[str, Any] = {"cidr": str(net)}
    if excepts:
        block["except"] = excepts
    return block


def _ports(rule: EgressRule) -> list[dict[str, Any]]:
    protocol = rule.protocol.upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise EgressDataError(f"egress protocol {rule.protocol!r} must be tcp, udp or sctp")
    if not rule.ports:
        return [{"protocol": protocol}]
    return [{"protocol": protocol, "port": int(p)} for p in rule.ports]


def egress_rules(rules: Iterable[EgressRule], blocked: Iterable[str]) -> list[dict[str, Any]]:
    """One NetworkPolicy egress rule per allowlist entry."""
    blocked = list(blocked)
    return [{"to": [{"ipBlock": ip_block(r.cidr, blocked)}], "ports": _ports(r)} for r in rules]


def _rule(doc: Mapping[str, Any]) -> EgressRule:
    try:
        return EgressRule(
            cidr=str(doc["cidr"]),
            ports=tuple(int(p) for p in doc.get("ports", [])),
            protocol=str(doc.get("protocol", "tcp")),
            comment=str(doc.get("comment", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EgressDataError(f"egress rule {doc!r} is malformed: {exc!r}") from exc


def _policy(name: str, namespace: str, selector: Mapping[str, str], *, egress: list[dict[str, Any]] | None = None,
            ingress: list[dict[str, Any]] | None = None, comment: str = "") -> dict[str, Any]:
    types = (["Ingress"] if ingress is not None else []) + (["Egress"] if egress is not None else [])
    spec: dict[str, Any] = {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "jovial-guard", "app.kubernetes.io/component": "egress"},
    }
    if comment:
        metadata["annotations"] = {"jovial-guard.io/why": comment}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def render_network_policies(
    settings: Mapping[str, Any],
    *,
    namespace: str = "jhub",
    notebook_selector: Mapping[str, str] = NOTEBOOK_SELECTOR,
    hub_port: int = 8081,
    notebook_port: int = 8888,
) -> list[dict[str, Any]]:
    """All NetworkPolicies for notebook pods from ``data.settings`` (policies/data.json)."""
    try:
        egress = settings["egress"]
        groups: Mapping[str, Any] = egress.get("groups", {})
        blocked = [str(b) for b in egress.get("blocked", [])]
        dns_rules = [_rule({"cidr": c, "ports": [53], "protocol": p}) for c in egress.get("dns", []) for p in ("udp", "tcp")]
        hub_rules = [_rule(r) for r in egress.get("hub", [])]
    except (KeyError, TypeError, AttributeError) as exc:
        raise EgressDataError(f"settings.egress is malformed: {exc!r}") from exc
    for b in blocked:
        _network(b)
    sel = dict(notebook_selector)
    policies = [
        _policy("jovial-guard-default-deny", namespace, sel, egress=[], ingress=[],
                comment="notebooks reach nothing and are reached by nothing unless a rule below allows it"),
        _policy(
            "jovial-guard-dns", namespace, sel,
            egress=[{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }] + egress_rules(dns_rules, blocked),
            comment="cluster DNS and settings.egress.dns",
        ),
        _policy(
            "jovial-guard-hub", namespace, sel,
            egress=[{"to": [{"podSelector": {"matchLabels": dict(HUB_SELECTOR)}}], "ports": [{"protocol": "TCP", "port": hub_port}]}]
            + egress_rules(hub_rules, blocked),
            comment="the hub API and settings.egress.hub",
        ),
        _policy(
            "jovial-guard-ingress-from-proxy", namespace, sel,
            ingress=[{"from": [{"podSelector": {"matchLabels": dict(PROXY_SELECTOR)}}, {"podSelector": {"matchLabels": dict(HUB_SELECTOR)}}],
                      "ports": [{"protocol": "TCP", "port": notebook_port}]}],
            comment="only the proxy and the hub reach the notebook server",
        ),
    ]
    everyone = [_rule(r) for r in groups.get("*", [])]
    if everyone:
        policies.append(_policy("jovial-guard-egress-all", namespace, sel, egress=egress_rules(everyone, blocked),
                                comment="settings.egress.groups['*']"))
    for group in sorted(g for g in groups if g != "*"):
        rules = [_rule(r) for r in groups[group]]
        label = group_label(group)
        if not rules or label is None:
            continue  # no label can carry this group: nobody gets its allowlist (fail closed)
        slug = _DNS_LABEL.sub("-", group.lower()).strip("-")[:40] or "group"
        policies.append(_policy(f"jovial-guard-egress-{slug}", namespace, {**sel, label: "allow"},
                                egress=egress_rules(rules, blocked), comment=f"settings.egress.groups[{group!r}]"))
    return policies


def render_for_egress(egress: Egress, *, name: str, namespace: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """One NetworkPolicy for one pod from a decision's ``spec.egress`` (the embedded vocabulary)."""
    rules = [EgressRule(cidr=c, ports=(53,), protocol=p) for c in egress.dns for p in ("udp", "tcp")]
    rules += list(egress.hub) + list(egress.allow)
    return _policy(name, namespace, pod_labels, egress=egress_rules(rules, egress.blocked),
                   comment="rendered from the policy decision's egress spec")


def load_settings(data_json: Path | str) -> dict[str, Any]:
    """``settings`` from policies/data.json."""
    doc = json.loads(Path(data_json).read_text())
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        raise EgressDataError(f"{data_json} has no 'settings' object")
    return settings
