"""The one meaning of a decision's egress, shared by the nftables and NetworkPolicy renderers.

Why a core: the embedded hub enforces egress with nftables inside each user's network
namespace, Kubernetes with NetworkPolicies. Both read a decision's :class:`Egress` through
:func:`resolve`, so a CIDR, a blocked range or the metadata address means the same at both
enforcement points. The rules:

* DNS resolvers (udp and tcp 53) and the hub rules are always reachable on their ports; a
  DNS or hub CIDR that *contains* a blocked range or a metadata address is refused (it would
  open that range), so neither renderer has to decide what it means.
* Allowlist entries and blocked ranges: the most specific CIDR decides. An allowlisted CIDR
  inside a blocked range opens just that CIDR (on its ports); a broad allow never opens a
  blocked range inside it; an allow and a blocked range of the same CIDR: the allow wins.
* The cloud metadata addresses are blocked unless an allow rule names one exactly.

Pure: no I/O. Every malformed value raises :class:`EgressRuleInvalid` naming it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ..decision import Egress, EgressRule
from ..errors import Misconfigured

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = ("169.254.169.254/32", "fd00:ec2::254/128")
DNS_PORT = 53


class EgressRuleInvalid(Misconfigured):
    """A decision's egress section cannot be rendered (bad CIDR, port, protocol)."""


def network(cidr: str, *, what: str) -> IPNetwork:
    """``cidr`` (or a bare address) as a network; host bits are dropped."""
    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError as exc:
        raise EgressRuleInvalid(f"{what}: {cidr!r} is not a CIDR or address") from exc


def ports(rule: EgressRule, *, what: str) -> tuple[int, ...]:
    """The rule's ports, sorted and unique; empty means every port."""
    for port in rule.ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise EgressRuleInvalid(f"{what}: port {port!r} is not in 1..65535")
    return tuple(sorted(set(rule.ports)))


def protocols(rule: EgressRule, *, what: str) -> tuple[str, ...]:
    """``tcp``, ``udp`` or ``any`` (both), lower case."""
    proto = (rule.protocol or "tcp").lower()
    if proto not in ("tcp", "udp", "any"):
        raise EgressRuleInvalid(f"{what}: protocol {rule.protocol!r} is not tcp, udp or any")
    return ("tcp", "udp") if proto == "any" else (proto,)


@dataclass(frozen=True)
class Allow:
    """Traffic to ``net`` on ``ports`` (empty: all) over ``protocols`` is accepted."""

    net: IPNetwork
    ports: tuple[int, ...]
    protocols: tuple[str, ...]
    comment: str


@dataclass(frozen=True)
class Resolved:
    """A decision's egress, resolved: what both renderers turn into their own syntax.

    ``always``: DNS and hub allows, before anything else. ``ordered``: allows and blocked
    ranges, most specific first (an allow before a blocked range of the same CIDR); the
    first entry matching a destination decides it. Anything unmatched is refused.
    """

    always: tuple[Allow, ...]
    ordered: tuple[Allow | IPNetwork, ...]

    @property
    def blocked(self) -> tuple[IPNetwork, ...]:
        return tuple(e for e in self.ordered if not isinstance(e, Allow))

    @property
    def allows(self) -> tuple[Allow, ...]:
        return tuple(e for e in self.ordered if isinstance(e, Allow))


def _allow(rule: EgressRule, *, what: str) -> Allow:
    return Allow(net=network(rule.cidr, what=what), ports=ports(rule, what=what),
                 protocols=protocols(rule, what=what), comment=rule.comment or what)


def _refuse_opening(allow: Allow, blocked: set[IPNetwork], *, what: str) -> None:
    for b in sorted(blocked, key=lambda n: (n.version, n.with_prefixlen)):
        if b.version == allow.net.version and b != allow.net and b.subnet_of(allow.net):  # type: ignore[arg-type]
            raise EgressRuleInvalid(
                f"{what}: {allow.net} contains the blocked range {b}; name the {what} "
                "address itself"
            )


def resolve(egress: Egress, *, hub: Sequence[EgressRule] = ()) -> Resolved:
    """The egress of one decision (plus run-time ``hub`` rules) as one resolved plan."""
    always: list[tuple[Allow, str]] = []
    for resolver in egress.dns:
        net = network(resolver, what="dns resolver")
        rule = EgressRule(cidr=net.with_prefixlen, ports=(DNS_PORT,), protocol="any",
                          comment="dns resolver")
        always.append((_allow(rule, what="dns resolver"), "dns resolver"))
    for rule in tuple(egress.hub) + tuple(hub):
        always.append((_allow(rule, what="hub"), "hub"))

    allows = [_allow(rule, what="allowlist") for rule in egress.allow]
    blocked = {network(b, what="blocked") for b in egress.blocked}
    exact = {a.net for a in allows}
    metadata = {network(m, what="metadata") for m in METADATA_ADDRESSES}
    blocked |= {m for m in metadata if m not in exact}
    for entry, what in always:
        _refuse_opening(entry, blocked | metadata, what=what)

    keyed: list[tuple[tuple[int, int, int, str], Allow | IPNetwork]] = []
    for index, allow in enumerate(allows):
        keyed.append(((-allow.net.prefixlen, 0, allow.net.version, f"{index:06d}"), allow))
    for net in blocked:
        keyed.append(((-net.prefixlen, 1, net.version, net.with_prefixlen), net))
    ordered = tuple(entry for _key, entry in sorted(keyed, key=lambda k: k[0]))
    return Resolved(always=tuple(a for a, _what in always), ordered=ordered)


def routes_for(egress: Egress, *, hub: Sequence[EgressRule]) -> list[str]:
    """IPv4 destinations a user namespace gets a route for: hub, DNS, allowlist (sorted).

    Blocked ranges get no route unless an allow rule needs one; IPv6 gets none at all
    (the namespaces are IPv4-only, so IPv6 egress is impossible, not just filtered).
    """
    nets: set[ipaddress.IPv4Network] = set()
    for cidr in [r.cidr for r in tuple(egress.hub) + tuple(hub)] + list(egress.dns) + [
            r.cidr for r in egress.allow]:
        net = network(cidr, what="route")
        if isinstance(net, ipaddress.IPv4Network):
            nets.add(net)
    return [n.with_prefixlen for n in sorted(nets)]


def egress_from_settings(settings_egress: object, *, groups: Sequence[str]) -> Egress:
    """The Egress the policy gives a member of ``groups`` (``"*"`` is everyone), from
    ``data.settings.egress`` (policies/data.json): what the NetworkPolicy CLI renders from
    without asking OPA. Raises EgressRuleInvalid on a malformed settings section."""
    if not isinstance(settings_egress, dict):
        raise EgressRuleInvalid("settings.egress must be an object")
    try:
        table = settings_egress.get("groups", {})
        rules = tuple(_settings_rule(doc) for g in groups for doc in table.get(g, []))
        return Egress(
            allow=rules,
            dns=tuple(str(c) for c in settings_egress.get("dns", [])),
            hub=tuple(_settings_rule(doc) for doc in settings_egress.get("hub", [])),
            blocked=tuple(str(b) for b in settings_egress.get("blocked", [])),
        )
    except (AttributeError, TypeError) as exc:
        raise EgressRuleInvalid(f"settings.egress is malformed: {exc}") from exc


def _settings_rule(doc: object) -> EgressRule:
    if not isinstance(doc, dict) or "cidr" not in doc:
        raise EgressRuleInvalid(f"egress rule {doc!r} must be an object with a 'cidr'")
    raw_ports = doc.get("ports", [])
    if not isinstance(raw_ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in raw_ports):
        raise EgressRuleInvalid(f"egress rule {doc!r}: ports must be a list of integers")
    return EgressRule(cidr=str(doc["cidr"]), ports=tuple(raw_ports),
                      protocol=str(doc.get("protocol", "tcp")), comment=str(doc.get("comment", "")))
