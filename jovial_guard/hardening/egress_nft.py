"""Render a decision's egress as the nftables ruleset of one user namespace (pure).

The text is the golden artefact (``tests/vectors/egress/``): what :func:`render_nft_ruleset`
returns is exactly what ``nft -f`` receives inside the namespace. The meaning (what is
allowed, what is blocked, in which order) comes from :mod:`.egress_core`, shared with the
NetworkPolicy renderer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..decision import Egress, EgressRule
from .egress_core import Allow, EgressRuleInvalid, IPNetwork, network, resolve

DEFAULT_NOTEBOOK_PORT = 8888
TABLE = "jovial_guard"
#: Refused output fails at once (EHOSTUNREACH-style) instead of hanging until a timeout.
REJECT = "reject with icmpx type admin-prohibited"
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 ._:/,+-]")


def _comment(text: str) -> str:
    cleaned = _COMMENT_SAFE.sub("", text)[:60].strip()
    return f' comment "{cleaned}"' if cleaned else ""


def _daddr(net: IPNetwork) -> str:
    family = "ip" if net.version == 4 else "ip6"
    return f"{family} daddr {net.with_prefixlen}"


def _accepts(allow: Allow) -> list[str]:
    lines = []
    for proto in allow.protocols:
        if allow.ports:
            port_match = f" {proto} dport {{ {', '.join(str(p) for p in allow.ports)} }}"
        else:
            port_match = f" meta l4proto {proto}"
        lines.append(f"{_daddr(allow.net)}{port_match} counter accept{_comment(allow.comment)}")
    return lines


def _chain(name: str, hook: str, rules: list[str], last: str) -> list[str]:
    body = [f"\tchain {name} {{", f"\t\ttype filter hook {hook} priority filter; policy drop;"]
    body += [f"\t\t{r}" for r in rules]
    body.append(f"\t\tcounter {last}comment \"default deny\"")
    body.append("\t}")
    return body


def render_nft_ruleset(
    egress: Egress,
    *,
    hub: Sequence[EgressRule],
    inbound_from: Sequence[str] = (),
    notebook_port: int = DEFAULT_NOTEBOOK_PORT,
) -> str:
    """The nftables ruleset for one user namespace (pure; golden-tested).

    Output: default drop; loopback and replies; DNS (udp/tcp 53) to ``egress.dns``; the hub
    (``egress.hub`` plus the runtime ``hub`` rules); then allowlist and blocked ranges,
    most specific first (allow wins a tie). Input: default drop; loopback, replies, and the
    notebook port from ``inbound_from`` (the hub and proxy). Raises EgressRuleInvalid.
    """
    if not 1 <= notebook_port <= 65535:
        raise EgressRuleInvalid(f"notebook_port {notebook_port!r} is not in 1..65535")
    plan = resolve(egress, hub=hub)
    out: list[str] = [
        'oifname "lo" accept',
        "ct state invalid counter drop",
        "ct state established,related accept",
    ]
    for allow in plan.always:
        out += _accepts(allow)
    for entry in plan.ordered:
        if isinstance(entry, Allow):
            out += _accepts(entry)
        else:
            out.append(f"{_daddr(entry)} counter {REJECT} comment \"blocked {entry.with_prefixlen}\"")

    inbound: list[str] = [
        'iifname "lo" accept',
        "ct state invalid counter drop",
        "ct state established,related accept",
    ]
    for source in inbound_from:
        net = network(source, what="inbound_from")
        family = "ip" if net.version == 4 else "ip6"
        inbound.append(f"{family} saddr {net.with_prefixlen} tcp dport {notebook_port} "
                       "counter accept comment \"hub and proxy to the notebook server\"")
    inbound.append("meta l4proto { icmp, ipv6-icmp } counter accept comment \"ping and errors\"")

    lines = ["flush ruleset", f"table inet {TABLE} {{"]
    lines += _chain("output", "output", out, f"{REJECT} ")
    lines += _chain("input", "input", inbound, "")
    lines += _chain("forward", "forward", [], "")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_router_ruleset(*, uplink: str, notebook_port: int = DEFAULT_NOTEBOOK_PORT) -> str:
    """Rules of the router namespace: users never reach each other; the host only the
    notebook port; the router itself answers nothing but replies."""
    return "\n".join([
        "flush ruleset",
        f"table inet {TABLE}_router {{",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        "\t\tct state invalid counter drop",
        "\t\tct state established,related accept",
        '\t\tiifname "u*" oifname "u*" counter drop comment "users never reach each other"',
        f'\t\tiifname "{uplink}" oifname "u*" tcp dport {notebook_port} accept '
        'comment "hub and proxy to notebook servers"',
        f'\t\tiifname "u*" oifname {{ "{uplink}", "s*" }} accept '
        'comment "users, already filtered in their own namespace"',
        '\t\tcounter comment "default deny"',
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiifname "lo" accept',
        "\t\tct state established,related accept",
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",
        "\t}",
        "}",
    ]) + "\n"
