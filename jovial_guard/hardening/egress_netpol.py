"""Render a decision's egress as Kubernetes NetworkPolicies (pure).

The embedded hub enforces a decision's :class:`Egress` with nftables inside the notebook's
network namespace (:mod:`.egress_nft`); on Kubernetes the same Egress becomes
NetworkPolicies. Both read it through :func:`.egress_core.resolve`, so both enforcement
points allow exactly the same destinations (``tests/unit/test_egress_agree.py`` checks it).

NetworkPolicies only add allows, so the ordered "most specific wins" list becomes: each
allowed CIDR with every blocked range strictly inside it as ``except``. A destination is
allowed iff some allow contains it (on that port) and no blocked range strictly inside that
allow contains it: the same as the first match of the nftables chain.

:func:`render_network_policies` renders the cluster-wide set from ``data.settings`` (what
``jovial-guard webhook netpol`` writes):

* ``jovial-guard-default-deny``: every notebook pod, egress (and ingress) default deny;
* ``jovial-guard-dns``: DNS to the cluster resolver (kube-system/kube-dns) + ``egress.dns``;
* ``jovial-guard-hub``: the hub API (hub pod, port 8081) + ``egress.hub`` rules;
* ``jovial-guard-ingress-from-proxy``: only the proxy (and hub) may reach the notebook port;
* ``jovial-guard-egress-all``: the Egress of the ``"*"`` group, for every notebook;
* ``jovial-guard-egress-<group>``: the Egress a member of ``<group>`` gets, for pods
  carrying the label ``egress.jovial-guard.io/<group>: allow``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..decision import Egress, EgressRule
from .egress_core import Allow, EgressRuleInvalid, IPNetwork, egress_from_settings, resolve

#: Labels of z2jh's pods.
NOTEBOOK_SELECTOR = {"component": "singleuser-server"}
HUB_SELECTOR = {"component": "hub"}
PROXY_SELECTOR = {"component": "proxy"}
GROUP_LABEL_PREFIX = "egress.jovial-guard.io/"
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def group_label(group: str) -> str | None:
    """The pod label key that opts a pod into ``group``'s allowlist (None if unrepresentable)."""
    return GROUP_LABEL_PREFIX + group if _LABEL_NAME.match(group) else None


def _ports(allow: Allow) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for proto in allow.protocols:
        if allow.ports:
            out += [{"protocol": proto.upper(), "port": p} for p in allow.ports]
        else:
            out.append({"protocol": proto.upper()})
    return out


def _ip_block(net: IPNetwork, excepts: Iterable[IPNetwork]) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": net.with_prefixlen}
    inside = sorted({b.with_prefixlen for b in excepts
                     if b.version == net.version and b != net and b.subnet_of(net)})  # type: ignore[arg-type]
    if inside:
        block["except"] = inside
    return block


def egress_rules(egress: Egress, *, hub: Sequence[EgressRule] = (), always: bool = True,
                 ordered: bool = True) -> list[dict[str, Any]]:
    """NetworkPolicy egress rules for ``egress``: its DNS and hub allows (``always``) and its
    allowlist with blocked ranges excepted (``ordered``). Raises EgressRuleInvalid."""
    plan = resolve(egress, hub=hub)
    rules: list[dict[str, Any]] = []
    if always:
        rules += [{"to": [{"ipBlock": _ip_block(a.net, ())}], "ports": _ports(a)} for a in plan.always]
    if ordered:
        rules += [{"to": [{"ipBlock": _ip_block(a.net, plan.blocked)}], "ports": _ports(a)}
                  for a in plan.allows]
    return rules


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


def render_decision_policy(egress: Egress, *, name: str, namespace: str, pod_labels: Mapping[str, str],
                           hub: Sequence[EgressRule] = ()) -> dict[str, Any]:
    """One NetworkPolicy for one pod from a decision's ``spec.egress`` (plus run-time ``hub``)."""
    return _policy(name, namespace, pod_labels, egress=egress_rules(egress, hub=hub),
                   comment="rendered from the policy decision's egress spec")


def render_network_policies(
    settings: Mapping[str, Any],
    *,
    namespace: str = "jhub",
    notebook_selector: Mapping[str, str] = NOTEBOOK_SELECTOR,
    hub_port: int = 8081,
    notebook_port: int = 8888,
) -> list[dict[str, Any]]:
    """All NetworkPolicies for notebook pods from ``data.settings`` (policies/data.json).

    Each group's rules are rendered from the Egress the policy gives its members
    (:func:`.egress_core.egress_from_settings`). Raises EgressRuleInvalid.
    """
    section = settings.get("egress") if isinstance(settings, Mapping) else None
    base = egress_from_settings(section, groups=())
    groups = section.get("groups", {}) if isinstance(section, dict) else {}
    if not isinstance(groups, dict):
        raise EgressRuleInvalid("settings.egress.groups must be an object")
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
            }] + egress_rules(Egress(dns=base.dns, blocked=base.blocked), ordered=False),
            comment="cluster DNS and settings.egress.dns",
        ),
        _policy(
            "jovial-guard-hub", namespace, sel,
            egress=[{"to": [{"podSelector": {"matchLabels": dict(HUB_SELECTOR)}}], "ports": [{"protocol": "TCP", "port": hub_port}]}]
            + egress_rules(Egress(hub=base.hub, blocked=base.blocked), ordered=False),
            comment="the hub API and settings.egress.hub",
        ),
        _policy(
            "jovial-guard-ingress-from-proxy", namespace, sel,
            ingress=[{"from": [{"podSelector": {"matchLabels": dict(PROXY_SELECTOR)}}, {"podSelector": {"matchLabels": dict(HUB_SELECTOR)}}],
                      "ports": [{"protocol": "TCP", "port": notebook_port}]}],
            comment="only the proxy and the hub reach the notebook server",
        ),
    ]
    everyone = egress_from_settings(section, groups=("*",))
    if everyone.allow:
        policies.append(_policy("jovial-guard-egress-all", namespace, sel,
                                egress=egress_rules(everyone, always=False),
                                comment="settings.egress.groups['*']"))
    for group in sorted(g for g in groups if g != "*"):
        member = egress_from_settings(section, groups=(group,))
        label = group_label(group)
        if not member.allow or label is None:
            continue  # no label can carry this group: nobody gets its allowlist (fail closed)
        slug = _DNS_LABEL.sub("-", group.lower()).strip("-")[:40] or "group"
        policies.append(_policy(f"jovial-guard-egress-{slug}", namespace, {**sel, label: "allow"},
                                egress=egress_rules(member, always=False),
                                comment=f"settings.egress.groups[{group!r}]"))
    return policies


def load_settings(data_json: Path | str) -> dict[str, Any]:
    """``settings`` from policies/data.json; EgressRuleInvalid if it has none."""
    try:
        doc = json.loads(Path(data_json).read_text())
    except (OSError, ValueError) as exc:
        raise EgressRuleInvalid(f"{data_json} cannot be read as JSON: {exc}") from exc
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        raise EgressRuleInvalid(f"{data_json} has no 'settings' object")
    return settings
