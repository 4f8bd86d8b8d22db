"""Per-user network namespaces carrying the nftables egress rules rendered from a decision.

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
  10.213.255.253): that is the ``hub_connect_ip`` for every user.
* The router namespace forwards (its own ``ip_forward``; the host's is untouched) and has
  **no uplink and no default route**: nothing a user sends can leave this machine. Users
  cannot reach each other (router forward rules) and the host can only open the notebook
  port on a user.
* Each user namespace has no default route; it has routes only to what its decision
  allows, and an nftables ruleset (:mod:`.egress_nft`) with default-deny output.
* ``attach_service`` plugs a namespace with a service address into the router: local data
  services in the embedded mode, and the tests' test hosts.

Planning (:meth:`EgressNamespaces.plan`) is pure; :meth:`EgressNamespaces.create` carries a
plan out through netlink (:mod:`.netns`) and undoes itself on failure. Which namespace a hub
user gets is :func:`.netns_names.namespace_key`, the one naming function.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from ..decision import Egress, EgressRule
from . import netns
from .egress_core import METADATA_ADDRESSES, EgressRuleInvalid, network, routes_for
from .egress_digest import digest_listing
from .egress_nft import DEFAULT_NOTEBOOK_PORT, render_nft_ruleset, render_router_ruleset
from .egress_spares import SpareNamespaces, plan_key
from .egress_state import StateStore
from .egress_types import NamespaceHandle, NamespacePlan, ServiceHandle, UserNamespace
from .netns import EgressSetupFailed
from .netns_names import check_key, check_prefix, namespace_key

DEFAULT_POOL = "10.213.0.0/16"
STATE_ROOT = Path("/run/jovial-guard/egress")

__all__ = [
    "DEFAULT_POOL", "METADATA_ADDRESSES", "EgressNamespaces", "EgressRuleInvalid",
    "EgressSetupFailed", "NamespaceHandle", "NamespacePlan", "ServiceHandle", "UserNamespace",
]


class EgressNamespaces(SpareNamespaces):
    """Create and destroy per-user egress namespaces behind one project router namespace.

    ``prefix`` names everything (``PREFIX-egress``, ``PREFIX-hub``, ``PREFIX-u-NAME``,
    ``PREFIX-s-NAME``) so separate instances (the running hub, a test run) never collide,
    as long as they also use separate ``pool`` ranges.
    """

    def __init__(self, prefix: str = "jg", *, pool: str = DEFAULT_POOL,
                 notebook_port: int = DEFAULT_NOTEBOOK_PORT,
                 state_root: Path = STATE_ROOT) -> None:
        check_prefix(prefix)
        net = network(pool, what="pool")
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 20:
            raise EgressRuleInvalid(f"pool {pool!r} must be an IPv4 network of /20 or larger")
        self.prefix = prefix
        self.pool = net
        self.notebook_port = notebook_port
        halves = list(net.subnets(prefixlen_diff=1))
        self._user_links = halves[0]
        self._service_links = list(halves[1].subnets(prefixlen_diff=1))[0]
        host_link = ipaddress.IPv4Network((int(net.broadcast_address) - 3, 30))
        self.hub_address = str(host_link.network_address + 1)
        self.uplink_address = str(host_link.network_address + 2)
        self.router = f"{prefix}-egress"
        self.host_link = f"{prefix}-hub"
        self.state_dir = state_root / prefix
        self._state = StateStore(self.state_dir)
        self._rendered: dict[tuple[Egress, tuple[EgressRule, ...]], tuple[tuple[str, ...], str]] = {}

    # -- names ------------------------------------------------------------------------------
    def user_ns(self, key: str) -> str:
        """The namespace of an already escaped ``key`` (see :meth:`namespace_of`)."""
        return f"{self.prefix}-u-{check_key(key)}"

    def namespace_of(self, username: str) -> str:
        """The namespace of hub user ``username`` (the raw hub name, e.g. ``alice@uni.edu``)."""
        return self.user_ns(namespace_key(username))

    def service_ns(self, name: str) -> str:
        return f"{self.prefix}-s-{check_key(name)}"

    def hub_rule(self, port: int) -> EgressRule:
        """The egress rule a user needs for the hub API on ``port``."""
        return EgressRule(cidr=f"{self.hub_address}/32", ports=(port,), protocol="tcp",
                          comment="jupyterhub api")

    # -- query API ----------------------------------------------------------------------------
    def user_namespace(self, username: str) -> UserNamespace | None:
        """The live namespace of hub user ``username``, or None if it has none."""
        ns = self.namespace_of(username)
        state = self._state.read(ns)
        if state is None or not netns.exists(ns):
            return None
        return UserNamespace(name=ns, path=str(netns.path_of(ns)), address=str(state["address"]),
                             gateway=str(state["gateway"]), router_link=str(state["router_link"]))

    def live_ruleset(self, username: str) -> str:
        """The nftables ruleset installed in hub user ``username``'s namespace, read live."""
        return self.rules(namespace_key(username))

    def rules(self, key: str) -> str:
        """``nft list ruleset`` inside the namespace of ``key``: proof of what is installed."""
        ns = self.user_ns(key)
        if not netns.exists(ns):
            raise EgressSetupFailed(f"network namespace {ns} does not exist")
        return netns.nft(ns, ["list", "ruleset"], what="list rules")

    def routes(self, key: str) -> str:
        """The IPv4 routes of the namespace of ``key``, one ``DEST via GW dev IF`` a line."""
        ns = self.user_ns(key)
        return "\n".join(netns.netlink(ns, netns.route_lines, what="list routes")) + "\n"

    # -- router -----------------------------------------------------------------------------
    def ensure_router(self) -> None:
        """Create the router namespace and the host link if missing (idempotent)."""
        with self._state.lock():
            self._ensure_router_locked()

    def _ensure_router_locked(self) -> None:
        if netns.exists(self.router) and netns.link_exists(self.host_link):
            return
        self._remove_router_locked()
        self._refuse_pool_in_use()
        r = self.router
        netns.create(r)
        netns.sysctl(r, "net.ipv4.ip_forward", "1")

        def host_link(ipr: IPRoute) -> None:
            netns.veth_into(ipr, self.host_link, peer="host0", peer_netns=r)
            netns.address_up(ipr, self.host_link, f"{self.hub_address}/30")

        def host_route(ipr: IPRoute) -> None:
            netns.route_via(ipr, self._user_links.with_prefixlen, gateway=self.uplink_address,
                            ifname=self.host_link)

        try:
            netns.netlink(None, host_link, what="host link")
            netns.netlink(r, lambda ipr: netns.address_up(ipr, "host0", f"{self.uplink_address}/30"),
                          what="router uplink")
            netns.netlink(None, host_route, what="host route to user links")
        except EgressSetupFailed:
            self._remove_router_locked()
            raise
        netns.apply_ruleset(r, render_router_ruleset(uplink="host0", notebook_port=self.notebook_port),
                            what="router rules")

    def _refuse_pool_in_use(self) -> None:
        """Two instances on one pool would steal each other's host route: refuse instead."""
        mine = (self._user_links, ipaddress.ip_network(f"{self.hub_address}/32"))

        def taken(ipr: IPRoute) -> str:
            for route in ipr.get_routes(family=2, table=0):
                if route.get("dst") and route["dst_len"] >= self.pool.prefixlen:
                    net = ipaddress.ip_network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
                    if any(net.overlaps(m) for m in mine):
                        return f"route {net}"
            for addr in ipr.get_addr(family=2):
                ip = ipaddress.ip_address(addr.get("address"))
                if any(ip in m for m in mine):
                    return f"address {ip}"
            return ""

        found = netns.netlink(None, taken, what="check pool")
        if found:
            raise EgressSetupFailed(
                f"egress pool {self.pool} is already in use on this host ({found}): another "
                "jovial_guard instance (or something else) owns it; give this one its own pool "
                "and prefix"
            )

    def _remove_router_locked(self) -> None:
        def drop(ipr: IPRoute) -> None:
            if netns.has_link(ipr, self.host_link):
                ipr.link("del", ifname=self.host_link)

        netns.netlink(None, drop, what="remove host link")
        netns.remove(self.router)

    # -- users ------------------------------------------------------------------------------
    def plan(self, key: str, egress: Egress, *, hub_addresses: Sequence[EgressRule] = ()) -> NamespacePlan:
        """What the namespace of ``key`` will be for ``egress`` (pure; raises EgressRuleInvalid).

        Routes and rules depend only on the egress settings, so the rendering of each
        distinct setting is kept (most users share a profile's)."""
        rendered_key = (egress, tuple(hub_addresses))
        rendered = self._rendered.get(rendered_key)
        if rendered is None:
            rendered = (tuple(routes_for(egress, hub=hub_addresses)),
                        render_nft_ruleset(egress, hub=hub_addresses,
                                           inbound_from=[f"{self.hub_address}/32"],
                                           notebook_port=self.notebook_port))
            if len(self._rendered) >= 256:
                self._rendered.clear()
            self._rendered[rendered_key] = rendered
        return NamespacePlan(name=self.user_ns(key), routes=rendered[0], ruleset=rendered[1])

    def create(self, key: str, egress: Egress, *,
               hub_addresses: Sequence[EgressRule] = ()) -> NamespaceHandle:
        """A fresh namespace for ``key`` with routes and rules from ``egress``."""
        return self.apply(self.plan(key, egress, hub_addresses=hub_addresses))

    def apply(self, plan: NamespacePlan) -> NamespaceHandle:
        """Carry out ``plan``: any leftover namespace of the same name is removed first; a
        ready spare (:meth:`make_spare`) is taken when there is one, else a namespace is made
        now. A spare made ready for this very plan already holds its routes and rules and is
        only renamed; any other spare gets them now. On failure nothing half-made is left
        and EgressSetupFailed is raised."""
        ns = plan.name
        key = plan_key(plan.routes, plan.ruleset)
        with self._state.lock():
            self._ensure_router_locked()
            self._destroy_locked(ns)
            spare = self._claim_spare_locked(ns, key)
            if spare is None:
                index = self._free_index()
                address, gateway = self._addresses(index)
            else:
                index, address, gateway = spare.index, spare.address, spare.gateway
            self._state.write(ns, {"kind": "user", "ns": ns, "index": index, "address": address,
                                   "gateway": gateway, "router_link": f"u{index}"})
            try:
                if spare is None:
                    self._plumb(ns, f"u{index}", gateway=gateway, address=None)
                if spare is not None and spare.prepared == key:
                    digest = spare.ruleset_digest
                else:
                    digest = self._load_rules(ns, routes=plan.routes, ruleset=plan.ruleset, gateway=gateway,
                                              address=address if spare is None else None,
                                              stale_routes=spare.routes if spare is not None else ())
            except BaseException:
                self._destroy_locked(ns)
                raise
        self.expect(plan.routes, plan.ruleset)
        return NamespaceHandle(name=ns, path=plan.path, address=address, gateway=gateway,
                               ruleset_digest=digest, spare=spare is not None,
                               prepared=spare is not None and spare.prepared == key)

    def destroy(self, key: str) -> None:
        """Remove the namespace of ``key`` and its router link; idempotent."""
        with self._state.lock():
            self._destroy_locked(self.user_ns(key))

    def discard(self, name: str) -> None:
        """Remove the user namespace called ``name`` (``PREFIX-u-KEY``, as planned); idempotent."""
        head = f"{self.prefix}-u-"
        if not name.startswith(head):
            raise EgressRuleInvalid(f"{name!r} is not a user namespace of prefix {self.prefix!r}")
        self.destroy(name[len(head):])

    def destroy_service(self, name: str) -> None:
        """Remove a service namespace, its router link and route; idempotent."""
        with self._state.lock():
            self._destroy_locked(self.service_ns(name))

    # -- services ---------------------------------------------------------------------------
    def attach_service(self, name: str, address: str) -> ServiceHandle:
        """A namespace holding ``address`` reachable through the router (not from the host)."""
        ns = self.service_ns(name)
        addr = network(address, what="service address")
        if addr.num_addresses != 1 or addr.version != 4:
            raise EgressRuleInvalid(f"service address {address!r} must be one IPv4 address")
        host = str(addr.network_address)
        with self._state.lock():
            self._ensure_router_locked()
            self._destroy_locked(ns)
            index = self._free_index(kind="service")
            link = _link(self._service_links, index)
            router_side, svc_side = str(link.network_address + 1), str(link.network_address + 2)
            self._state.write(ns, {"kind": "service", "ns": ns, "index": index,
                                   "address": host, "router_link": f"s{index}"})
            try:
                self._plumb(ns, f"s{index}", gateway=router_side, address=svc_side)

                def inside(ipr: IPRoute) -> None:
                    ipr.addr("add", index=netns.link_index(ipr, "eth0"), address=host, prefixlen=32)
                    netns.route_via(ipr, self.pool.with_prefixlen, gateway=router_side, ifname="eth0")

                netns.netlink(ns, inside, what="service address")
                netns.netlink(self.router, lambda ipr: netns.route_via(
                    ipr, f"{host}/32", gateway=svc_side, ifname=f"s{index}"), what="router route")
            except BaseException:
                self._destroy_locked(ns)
                raise
        return ServiceHandle(name=ns, path=str(netns.path_of(ns)), address=host)

    # -- teardown ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Namespaces (users and services) this instance has state for."""
        return self._state.names()

    def teardown(self) -> None:
        """Remove every namespace of this prefix, the router and the host link."""
        with self._state.lock():
            for ns in self.names():
                self._destroy_locked(ns)
            for ns in netns.list_names():
                if ns.startswith((f"{self.prefix}-u-", f"{self.prefix}-s-", f"{self.prefix}-p-")):
                    netns.remove(ns)
            self._remove_router_locked()
        self._state.remove_if_empty()

    # -- internals --------------------------------------------------------------------------
    def _plumb(self, ns: str, router_link: str, *, gateway: str, address: str | None) -> None:
        """Namespace ``ns`` linked to the router; ``address`` on its ``eth0`` (None: the
        caller sets it together with the routes, in one entry into the namespace)."""
        netns.create(ns)

        def router_side(ipr: IPRoute) -> None:
            netns.veth_into(ipr, router_link, peer="eth0", peer_netns=ns)
            netns.address_up(ipr, router_link, f"{gateway}/30")

        netns.netlink(self.router, router_side, what="router link")
        if address is not None:
            netns.netlink(ns, lambda ipr: netns.address_up(ipr, "eth0", f"{address}/30"),
                          what="namespace address")

    def _load_rules(self, ns: str, *, routes: Sequence[str], ruleset: str, gateway: str,
                    address: str | None = None, stale_routes: Sequence[str] = ()) -> str:
        """Routes (``address`` first when given; ``stale_routes`` not in ``routes`` removed)
        and ``ruleset`` into namespace ``ns`` from one entry; the kernel's ruleset digest."""
        def inside(ipr: IPRoute) -> None:
            if address is not None:
                netns.address_up(ipr, "eth0", f"{address}/30")
            eth0 = netns.link_index(ipr, "eth0")
            for dest in stale_routes:
                if dest not in routes:
                    netns.route_del(ipr, dest)
            for dest in routes:
                netns.route_via(ipr, dest, gateway=gateway, ifname="eth0", index=eth0)

        listing = netns.routes_and_ruleset(ns, inside, ruleset, what="address, routes and egress rules")
        return digest_listing(listing)

    def _destroy_locked(self, ns: str) -> None:
        state = self._state.read(ns)
        if state is not None and netns.exists(self.router):
            link = str(state.get("router_link", ""))

            def drop(ipr: IPRoute) -> None:
                # A service's route goes with its link.
                if link and netns.has_link(ipr, link):
                    ipr.link("del", ifname=link)

            netns.netlink(self.router, drop, what="remove router link")
        netns.remove(ns)
        self._state.forget(ns)

    def _addresses(self, index: int) -> tuple[str, str]:
        """(namespace address, router-side gateway) of user link ``index``."""
        link = _link(self._user_links, index)
        return str(link.network_address + 2), str(link.network_address + 1)

    def _free_index(self, kind: str = "user") -> int:
        # Spares hold user links until they are taken.
        kinds = ("user", "spare") if kind == "user" else (kind,)
        used = {int(str(s["index"])) for s in self._state.all()
                if s.get("kind") in kinds and "index" in s}
        links = self._user_links if kind == "user" else self._service_links
        for index in range(links.num_addresses // 4):
            if index not in used:
                return index
        raise EgressSetupFailed(f"no free {kind} link left in {links}")


def _link(links: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Network:
    """The ``index``-th /30 of ``links`` (computed, not listed: a /17 holds 8192 of them)."""
    return ipaddress.IPv4Network((int(links.network_address) + 4 * index, 30))
