"""Spare egress namespaces on the real kernel: made ahead, taken by a spawn with the user's
routes and rules, refilled, and all of it removed again; the host ruleset is never touched.

Everything here carries the prefix ``jgp`` and the pool 10.218.0.0/16.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jovial_guard.decision import Egress
from jovial_guard.hardening.egress import EgressNamespaces
from jovial_guard.hardening.egress_spares import SparePool

from .test_egress_namespaces import _connect, _host_ruleset, _serve

pytestmark = pytest.mark.integration
PREFIX = "jgp"


def _ip_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-"))


def _tables(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                          capture_output=True, text=True, check=True).stdout


def _router_links(egress: EgressNamespaces) -> list[str]:
    out = subprocess.run(["ip", "-n", egress.router, "-o", "link", "show"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                  if line.split(":")[1].strip().startswith("u"))


@pytest.fixture
def egress() -> Iterator[EgressNamespaces]:
    ns = EgressNamespaces(PREFIX, pool="10.218.0.0/16")
    ns.teardown()
    before = _host_ruleset()
    try:
        yield ns
    finally:
        ns.teardown()
        assert _ip_netns() == [], "namespaces of the test's prefix were left behind"
        assert _host_ruleset() == before, "the host's nftables ruleset changed"


def _wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the spare pool")
        time.sleep(0.05)


@contextlib.contextmanager
def _hub_ports(egress: EgressNamespaces, *ports: int) -> Iterator[None]:
    """Listeners on the hub address at ``ports`` while the block runs."""
    servers = [_serve(None, egress.hub_address, port) for port in ports]
    try:
        yield
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


def test_spares_are_made_taken_refilled_and_removed(egress: EgressNamespaces) -> None:
    pool = SparePool(egress, 2, settle=0.0)
    pool.start()
    try:
        _wait_for(lambda: egress.spare_count() == 2)
        spares = [n for n in _ip_netns() if n.startswith(f"{PREFIX}-p-")]
        assert len(spares) == 2
        # A spare runs nothing and carries no rules until a spawn takes it.
        assert all(_tables(n).strip() == "" for n in spares)

        handle = egress.create("alice", Egress(), hub_addresses=[egress.hub_rule(18091)])
        assert egress.spare_count() == 1
        assert f"{PREFIX}-u-alice" in _ip_netns()
        assert len([n for n in _ip_netns() if n.startswith(f"{PREFIX}-p-")]) == 1
        assert "table inet jovial_guard" in _tables(handle.name)
        assert "default" not in egress.routes("alice")

        # The taken spare enforces the user's egress like a fresh namespace would.
        with _hub_ports(egress, 18091, 18092):
            assert _connect(handle.name, egress.hub_address, 18091) == "ok"
            assert _connect(handle.name, egress.hub_address, 18092) == "errno 113"

        pool.kick()
        _wait_for(lambda: egress.spare_count() == 2)
        links_with_alice = _router_links(egress)
        assert len(links_with_alice) == 3

        egress.destroy("alice")
        assert not Path(handle.path).exists()
        assert f"{PREFIX}-u-alice" not in _ip_netns()
        assert len(_router_links(egress)) == 2
    finally:
        pool.stop()
    egress.teardown()
    assert _ip_netns() == []


def test_without_spares_a_spawn_makes_its_own(egress: EgressNamespaces) -> None:
    handle = egress.create("bob", Egress(), hub_addresses=[])
    assert egress.spare_count() == 0 and Path(handle.path).exists()
    egress.destroy("bob")
    assert _ip_netns() == [f"{PREFIX}-egress"]


def test_half_made_spares_of_a_stopped_process_are_discarded(egress: EgressNamespaces) -> None:
    name = egress.make_spare()
    record = egress._state.read(name)
    assert record is not None
    egress._state.write(name, {**record, "ready": False})  # as if its maker stopped half-way
    assert egress.spare_count() == 0
    egress.discard_unfinished_spares()
    assert name not in _ip_netns() and name not in egress.names()
    assert _router_links(egress) == []


def test_a_spare_made_ready_for_a_plan_serves_that_plan_and_no_other(egress: EgressNamespaces) -> None:
    """A spare made after a plan was applied already holds that plan's routes and rules: a
    spawn with the same plan only renames it (and gets the kernel's digest of those rules);
    a spawn with another plan gets its own routes and rules in it, the old ones gone."""
    from jovial_guard.decision import EgressRule
    from jovial_guard.hardening.egress_digest import live_digest

    archive = Egress(allow=(EgressRule("198.51.100.0/24", (443,)),))
    mirror = Egress(allow=(EgressRule("192.0.2.0/24", (80,)),))
    first = egress.apply(egress.plan("alice", archive, hub_addresses=[egress.hub_rule(18091)]))
    assert not first.spare and not first.prepared
    egress.make_spare()
    spare_record = egress._state.read(egress.spare_ns(1))
    assert spare_record is not None and spare_record.get("prepared")
    assert "table inet jovial_guard" in _tables(egress.spare_ns(1))

    carol = egress.apply(egress.plan("carol", archive, hub_addresses=[egress.hub_rule(18091)]))
    assert carol.spare and carol.prepared
    assert carol.ruleset_digest == live_digest(carol.name) == first.ruleset_digest
    assert "198.51.100.0/24" in egress.routes("carol")

    egress.make_spare()  # ready for the archive plan again (the last one applied)
    bob = egress.apply(egress.plan("bob", mirror, hub_addresses=[egress.hub_rule(18092)]))
    assert bob.spare and not bob.prepared
    assert "198.51.100.0/24" not in egress.routes("bob")
    assert "192.0.2.0/24" in egress.routes("bob")
    assert bob.ruleset_digest == live_digest(bob.name) != first.ruleset_digest
    with _hub_ports(egress, 18091, 18092):
        assert _connect(bob.name, egress.hub_address, 18092) == "ok"
        assert _connect(bob.name, egress.hub_address, 18091) == "errno 113"
        assert _connect(carol.name, egress.hub_address, 18091) == "ok"
        assert _connect(carol.name, egress.hub_address, 18092) == "errno 113"
