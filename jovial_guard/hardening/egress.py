"""Per-user network namespaces with nftables egress rules rendered from the decision.

Why namespaces of our own: the container engine's bridge network edits the host firewall,
and rules inside a container's namespace are the only ones that follow the user and never
touch the host ruleset. Every rule here lives in a namespace jovial_guard created.

Topology (``pool`` defaults to 10.213.0.0/16, ``prefix`` to ``jg``)::

    host ns                     PREFIX-egress (router ns)                PREFIX-u-NAME
    PREFIX-hub  HUB_ADDRESS/30 <-> host0  .254/30                       eth0 10.213.x.y/30
      route pool/17 via .254     u<i>  10.213.x.(y-1)/30  <------------>  (routes ONLY to
                                 s<j>  service link /30 <-> PREFIX-s-SVC   hub, DNS, allowlist
                                       + route SVC_ADDR/32                 via the router)

* The hub listens on ``hub_address`` (the last /30 of the pool, host side, e.g.
  10.213.255.253): that is the ``hub_connect_ip`` for every user. It is an address on a
  project veth on the host, nothing else.
* The router namespace forwards (its own ``ip_forward``; the host's is untouched) and has
  **no uplink and no default route**: nothing a user sends can leave this machine. Users
  cannot reach each other (router forward rules) and the host can only open the notebook
  port on a user.
* Each user namespace has no default route; it has routes only to what its decision
  allows, and an nftables ruleset (``table inet jovial_guard``) with default-deny output.
* ``attach_service`` plugs a namespace with a service address into the router: local data
  services in the embedded mode, and the tests' test hosts (including a stand-in for the
  metadata address, routed only inside these namespaces).

Blocked ranges versus allowlists: the most specific CIDR decides. An allowlisted CIDR inside
a blocked range opens just that CIDR; a broad allow (``0.0.0.0/0``) never opens a blocked
range; the metadata address is always blocked unless allowlisted exactly.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..decision import Egress, EgressRule
from ..errors import JovialGuardError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = ("169.254.169.254/32", "fd00:ec2::254/128")
DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_NOTEBOOK_PORT = 8888
STATE_ROOT = Path("/run/jovial-guard/egress")
TABLE = "jovial_guard"
#: Refused output fails at once (EHOSTUNREACH-style) instead of hanging until a timeout.
REJECT = "reject with icmpx type admin-prohibited"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 ._:/,+-]")


class EgressRuleInvalid(JovialGuardError):
    """A decision's egress section cannot be rendered (bad CIDR, port, protocol)."""


class EgressSetupFailed(JovialGuardError):
    """Creating, configuring or removing a project network namespace failed."""


# --------------------------------------------------------------------------------------------
# Pure part: Egress -> nftables ruleset
# --------------------------------------------------------------------------------------------


def _network(cidr: str, *, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError as exc:
        raise EgressRuleInvalid(f"{what}: {cidr!r} is not a CIDR or address") from exc


def _ports(rule: EgressRule, *, what: str) -> tuple[int, ...]:
    for port in rule.ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise EgressRuleInvalid(f"{what}: port {port!r} is not in 1..65535")
    return tuple(sorted(set(rule.ports)))


def _protocols(rule: EgressRule, *, what: str) -> tuple[str, ...]:
    proto = (rule.protocol or "tcp").lower()
    if proto not in ("tcp", "udp", "any"):
        raise EgressRuleInvalid(f"{what}: protocol {rule.protocol!r} is not tcp, udp or any")
    if proto == "any":
        return ("tcp", "udp")
    return (proto,)


def _comment(text: str) -> str:
    cleaned = _COMMENT_SAFE.sub("", text)[:60].strip()
    return f' comment "{cleaned}"' if cleaned else ""


def _daddr(net: IPNetwork) -> str:
    family = "ip" if net.version == 4 else "ip6"
    return f"{family} daddr {net.with_prefixlen}"


def _accepts(net: IPNetwork, rule: EgressRule, *, what: str) -> list[str]:
    ports = _ports(rule, what=what)
    lines = []
    for proto in _protocols(rule, what=what):
        port_match = ""
        if ports:
            port_match = f" {proto} dport {{ {', '.join(str(p) for p in ports)} }}"
        else:
            port_match = f" meta l4proto {proto}"
        lines.append(f"{_daddr(net)}{port_match} counter accept{_comment(rule.comment or what)}")
    return lines


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
    out: list[str] = [
        'oifname "lo" accept',
        "ct state invalid counter drop",
        "ct state established,related accept",
    ]
    for resolver in egress.dns:
        net = _network(resolver, what="dns resolver")
        dns_rule = EgressRule(cidr=net.with_prefixlen, ports=(53,), protocol="any",
                              comment="dns resolver")
        out += _accepts(net, dns_rule, what="dns resolver")
    for rule in tuple(egress.hub) + tuple(hub):
        out += _accepts(_network(rule.cidr, what="hub"), rule, what="hub")

    # Allow and blocked ranges together, most specific first; on a tie the allow is first.
    decided: list[tuple[int, int, int, str, list[str]]] = []
    blocked = {_network(b, what="blocked") for b in egress.blocked}
    allowed_exactly = {_network(r.cidr, what="allow").with_prefixlen for r in egress.allow}
    for meta in METADATA_ADDRESSES:
        if meta not in allowed_exactly:
            blocked.add(_network(meta, what="metadata"))
    for index, rule in enumerate(egress.allow):
        net = _network(rule.cidr, what="allow")
        decided.append((net.version, -net.prefixlen, 0, f"{index:06d}",
                        _accepts(net, rule, what="allowlist")))
    for net in sorted(blocked, key=lambda n: (n.version, n.with_prefixlen)):
        decided.append((net.version, -net.prefixlen, 1, net.with_prefixlen,
                        [f"{_daddr(net)} counter {REJECT} comment \"blocked {net.with_prefixlen}\""]))
    for _v, _p, _kind, _key, lines in sorted(decided, key=lambda d: (d[1], d[2], d[0], d[3])):
        out += lines

    inbound: list[str] = [
        'iifname "lo" accept',
        "ct state invalid counter drop",
        "ct state established,related accept",
    ]
    for source in inbound_from:
        net = _network(source, what="inbound_from")
        family = "ip" if net.version == 4 else "ip6"
        inbound.append(f"{family} saddr {net.with_prefixlen} tcp dport {notebook_port} "
                       "counter accept comment \"hub and proxy to the notebook server\"")
    inbound.append("meta l4proto { icmp, ipv6-icmp } counter accept comment \"ping and errors\"")

    def chain(name: str, hook: str, rules: list[str], last: str) -> list[str]:
        body = [f"\tchain {name} {{",
                f"\t\ttype filter hook {hook} priority filter; policy drop;"]
        body += [f"\t\t{r}" for r in rules]
        body.append(f"\t\tcounter {last}comment \"default deny\"")
        body.append("\t}")
        return body

    lines = ["flush ruleset", f"table inet {TABLE} {{"]
    lines += chain("output", "output", out, f"{REJECT} ")
    lines += chain("input", "input", inbound, "")
    lines += chain("forward", "forward", [], "")
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


def routes_for(egress: Egress, *, hub: Sequence[EgressRule]) -> list[str]:
    """IPv4 destinations a user namespace gets a route for: hub, DNS, allowlist (sorted).

    Blocked ranges get no route unless an allow rule needs one; IPv6 gets none at all
    (the namespaces are IPv4-only, so IPv6 egress is impossible, not just filtered).
    """
    nets: set[ipaddress.IPv4Network] = set()
    for cidr in [r.cidr for r in tuple(egress.hub) + tuple(hub)] + list(egress.dns) + [
            r.cidr for r in egress.allow]:
        net = _network(cidr, what="route")
        if isinstance(net, ipaddress.IPv4Network):
            nets.add(net)
    return [n.with_prefixlen for n in sorted(nets)]


# --------------------------------------------------------------------------------------------
# I/O part: namespaces, veths, addresses, routes, applying rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceHandle:
    """A user's namespace: what the engine joins (``network_mode``) and where it lives."""

    name: str
    path: str
    address: str
    gateway: str

    @property
    def network_mode(self) -> str:
        return f"ns:{self.path}"


@dataclass(frozen=True)
class ServiceHandle:
    """A service namespace attached to the router (a data service or a test host)."""

    name: str
    path: str
    address: str


def _run(argv: list[str], *, what: str, stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressSetupFailed(f"{what}: {' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise EgressSetupFailed(f"{what} failed: {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


class EgressNamespaces:
    """Create and destroy per-user egress namespaces behind one project router namespace.

    ``prefix`` names everything (``PREFIX-egress``, ``PREFIX-hub``, ``PREFIX-u-NAME``,
    ``PREFIX-s-NAME``) so separate instances (the running hub, a test run) never collide,
    as long as they also use separate ``pool`` ranges.
    """

    def __init__(self, prefix: str = "jg", *, pool: str = DEFAULT_POOL,
                 notebook_port: int = DEFAULT_NOTEBOOK_PORT,
                 state_root: Path = STATE_ROOT) -> None:
        if not _PREFIX.match(prefix):
            raise EgressRuleInvalid(f"prefix {prefix!r} must match {_PREFIX.pattern}")
        net = _network(pool, what="pool")
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 20:
            raise EgressRuleInvalid(f"pool {pool!r} must be an IPv4 network of /20 or larger")
        self.prefix = prefix
        self.pool = net
        self.notebook_port = notebook_port
        halves = list(net.subnets(prefixlen_diff=1))
        quarters = list(halves[1].subnets(prefixlen_diff=1))
        self._user_links = halves[0]
        self._service_links = quarters[0]
        host_link = list(net.subnets(new_prefix=30))[-1]
        self.hub_address = str(host_link.network_address + 1)
        self.uplink_address = str(host_link.network_address + 2)
        self.router = f"{prefix}-egress"
        self.host_link = f"{prefix}-hub"
        self.state_dir = state_root / prefix

    # -- names ------------------------------------------------------------------------------
    def user_ns(self, name: str) -> str:
        return f"{self.prefix}-u-{self._check_name(name)}"

    def service_ns(self, name: str) -> str:
        return f"{self.prefix}-s-{self._check_name(name)}"

    @staticmethod
    def _check_name(name: str) -> str:
        if not _NAME.match(name):
            raise EgressRuleInvalid(
                f"namespace name {name!r} must be lowercase letters, digits and '-' "
                "(at most 40); escape hub user names first"
            )
        return name

    def hub_rule(self, port: int) -> EgressRule:
        """The egress rule a user needs for the hub API on ``port``."""
        return EgressRule(cidr=f"{self.hub_address}/32", ports=(port,), protocol="tcp",
                          comment="jupyterhub api")

    # -- router -----------------------------------------------------------------------------
    def ensure_router(self) -> None:
        """Create the router namespace and the host link if missing (idempotent)."""
        with self._lock():
            self._ensure_router_locked()

    def _ensure_router_locked(self) -> None:
        if _netns_exists(self.router) and _link_exists(self.host_link):
            return
        self._remove_router_locked()
        self._refuse_pool_in_use()
        r = self.router
        _run(["ip", "netns", "add", r], what="create router namespace")
        _run(["ip", "-n", r, "link", "set", "lo", "up"], what="router loopback")
        _run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
             what="router forwarding")
        _run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", "host0",
              "netns", r], what="create host link")
        _run(["ip", "addr", "add", f"{self.hub_address}/30", "dev", self.host_link],
             what="hub address")
        _run(["ip", "link", "set", self.host_link, "up"], what="host link up")
        _run(["ip", "-n", r, "addr", "add", f"{self.uplink_address}/30", "dev", "host0"],
             what="router uplink address")
        _run(["ip", "-n", r, "link", "set", "host0", "up"], what="router uplink up")
        for links in (self._user_links,):
            _run(["ip", "route", "replace", links.with_prefixlen, "via", self.uplink_address,
                  "dev", self.host_link], what="host route to user links")
        _run(["ip", "netns", "exec", r, "nft", "-f", "-"], what="router rules",
             stdin=render_router_ruleset(uplink="host0", notebook_port=self.notebook_port))

    def _refuse_pool_in_use(self) -> None:
        """Two instances on one pool would steal each other's host route: refuse instead."""
        for dest in (self._user_links.with_prefixlen, f"{self.hub_address}/32"):
            taken = _run(["ip", "-4", "route", "show", "table", "all", "to", dest],
                         what="check pool", check=False).stdout.strip()
            taken += _run(["ip", "-4", "-o", "addr", "show", "to", dest], what="check pool",
                          check=False).stdout.strip()
            if taken:
                raise EgressSetupFailed(
                    f"egress pool {self.pool} is already in use on this host ({taken.splitlines()[0]}):"
                    " another jovial_guard instance (or something else) owns it; give this one "
                    "its own pool and prefix"
                )

    def _remove_router_locked(self) -> None:
        if _link_exists(self.host_link):
            _run(["ip", "link", "del", self.host_link], what="remove host link", check=False)
        if _netns_exists(self.router):
            _run(["ip", "netns", "del", self.router], what="remove router namespace")

    # -- users ------------------------------------------------------------------------------
    def create(self, name: str, egress: Egress, *,
               hub_addresses: Sequence[EgressRule] = ()) -> NamespaceHandle:
        """A fresh namespace for ``name`` with routes and rules from ``egress``.

        ``hub_addresses`` are the hub rules known only at run time (``hub_rule(port)``).
        Any leftover namespace of the same name is removed first. On failure nothing
        half-made is left behind and EgressSetupFailed/EgressRuleInvalid is raised.
        """
        ns = self.user_ns(name)
        ruleset = render_nft_ruleset(egress, hub=hub_addresses,
                                     inbound_from=[f"{self.hub_address}/32"],
                                     notebook_port=self.notebook_port)
        routes = routes_for(egress, hub=hub_addresses)
        with self._lock():
            self._ensure_router_locked()
            self._destroy_locked(ns)
            index = self._free_index()
            link = list(self._user_links.subnets(new_prefix=30))[index]
            gateway, address = str(link.network_address + 1), str(link.network_address + 2)
            state = {"kind": "user", "ns": ns, "index": index, "address": address,
                     "gateway": gateway, "router_link": f"u{index}"}
            self._write_state(ns, state)
            try:
                self._plumb(ns, f"u{index}", gateway=gateway, address=address, plen=30)
                for dest in routes:
                    _run(["ip", "-n", ns, "route", "replace", dest, "via", gateway,
                          "dev", "eth0"], what=f"route {dest}")
                _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=ruleset,
                     what="apply egress rules")
            except BaseException:
                self._destroy_locked(ns)
                raise
        return NamespaceHandle(name=ns, path=f"/run/netns/{ns}", address=address,
                               gateway=gateway)

    def destroy(self, name: str) -> None:
        """Remove a user's namespace and its router link; idempotent."""
        with self._lock():
            self._destroy_locked(self.user_ns(name))

    def destroy_service(self, name: str) -> None:
        """Remove a service namespace, its router link and route; idempotent."""
        with self._lock():
            self._destroy_locked(self.service_ns(name))

    def rules(self, name: str) -> str:
        """``nft list ruleset`` inside the user's namespace: proof of what is installed."""
        return _run(["ip", "netns", "exec", self.user_ns(name), "nft", "list", "ruleset"],
                    what="list rules").stdout

    def routes(self, name: str) -> str:
        return _run(["ip", "-n", self.user_ns(name), "route", "show"], what="list routes").stdout

    # -- services ---------------------------------------------------------------------------
    def attach_service(self, name: str, address: str) -> ServiceHandle:
        """A namespace holding ``address`` reachable through the router (not from the host).

        For local services and test hosts. The address is routed only inside the project's
        router namespace.
        """
        ns = self.service_ns(name)
        addr = _network(address, what="service address")
        if addr.num_addresses != 1 or addr.version != 4:
            raise EgressRuleInvalid(f"service address {address!r} must be one IPv4 address")
        with self._lock():
            self._ensure_router_locked()
            self._destroy_locked(ns)
            index = self._free_index(kind="service")
            link = list(self._service_links.subnets(new_prefix=30))[index]
            router_side, svc_side = str(link.network_address + 1), str(link.network_address + 2)
            self._write_state(ns, {"kind": "service", "ns": ns, "index": index,
                                     "address": str(addr.network_address),
                                     "router_link": f"s{index}"})
            try:
                self._plumb(ns, f"s{index}", gateway=router_side, address=svc_side, plen=30)
                _run(["ip", "-n", ns, "addr", "add", f"{addr.network_address}/32", "dev", "eth0"],
                     what="service address")
                _run(["ip", "-n", ns, "route", "replace", self.pool.with_prefixlen, "via",
                      router_side, "dev", "eth0"], what="service return route")
                _run(["ip", "-n", self.router, "route", "replace", f"{addr.network_address}/32",
                      "via", svc_side, "dev", f"s{index}"], what="router route to service")
            except BaseException:
                self._destroy_locked(ns)
                raise
        return ServiceHandle(name=ns, path=f"/run/netns/{ns}", address=str(addr.network_address))

    # -- teardown ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Namespaces (users and services) this instance has state for."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def teardown(self) -> None:
        """Remove every namespace of this prefix, the router and the host link."""
        with self._lock():
            for ns in self.names():
                self._destroy_locked(ns)
            for ns in _list_netns():
                if ns.startswith(f"{self.prefix}-u-") or ns.startswith(f"{self.prefix}-s-"):
                    _run(["ip", "netns", "del", ns], what="remove namespace", check=False)
            self._remove_router_locked()
        if not self.names():
            (self.state_dir / ".lock").unlink(missing_ok=True)
            try:
                self.state_dir.rmdir()
            except OSError:
                pass  # another process recreated state meanwhile: leave it

    # -- internals --------------------------------------------------------------------------
    def _plumb(self, ns: str, router_link: str, *, gateway: str, address: str, plen: int) -> None:
        _run(["ip", "netns", "add", ns], what=f"create namespace {ns}")
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], what="loopback up")
        _run(["ip", "-n", self.router, "link", "add", router_link, "type", "veth", "peer",
              "name", "eth0", "netns", ns], what="create veth")
        _run(["ip", "-n", self.router, "addr", "add", f"{gateway}/{plen}", "dev", router_link],
             what="router side address")
        _run(["ip", "-n", self.router, "link", "set", router_link, "up"], what="router link up")
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{plen}", "dev", "eth0"],
             what="namespace address")
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"], what="namespace link up")

    def _destroy_locked(self, ns: str) -> None:
        state = self._read_state(ns)
        if state is not None:
            link = str(state.get("router_link", ""))
            if link and _netns_exists(self.router):
                _run(["ip", "-n", self.router, "link", "del", link], what="remove router link",
                     check=False)
            if state.get("kind") == "service" and _netns_exists(self.router):
                _run(["ip", "-n", self.router, "route", "del", f"{state['address']}/32"],
                     what="remove service route", check=False)
        if _netns_exists(ns):
            _run(["ip", "netns", "del", ns], what=f"remove namespace {ns}")
        (self.state_dir / f"{ns}.json").unlink(missing_ok=True)

    def _free_index(self, kind: str = "user") -> int:
        used = {int(str(s["index"])) for s in self._states()
                if s.get("kind") == kind and "index" in s}
        links = self._user_links if kind == "user" else self._service_links
        for index in range(links.num_addresses // 4):
            if index not in used:
                return index
        raise EgressSetupFailed(f"no free {kind} link left in {links}")

    def _states(self) -> Iterator[dict[str, object]]:
        for name in self.names():
            state = self._read_state(name)
            if state is not None:
                yield state

    def _read_state(self, name: str) -> dict[str, object] | None:
        try:
            doc = json.loads((self.state_dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def _write_state(self, name: str, state: dict[str, object]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{name}.json").write_text(json.dumps(state, sort_keys=True))

    def _lock(self) -> _FileLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return _FileLock(self.state_dir / ".lock")


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: object = None

    def __enter__(self) -> None:
        fh = open(self.path, "w")
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._fh = fh

    def __exit__(self, *exc: object) -> None:
        fh = self._fh
        if fh is not None:
            fh.close()  # type: ignore[attr-defined]
        self._fh = None


def _list_netns() -> list[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except OSError:
        return []


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()
