"""Egress namespaces on the real kernel: topology, isolation, cleanup, host left untouched.

Every namespace here is made by the test (prefix ``jge``, pool 10.217.0.0/16); traffic goes
only between them and the host side of the project link.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from jovial_guard.decision import Egress, EgressRule
from jovial_guard.hardening.egress import EgressNamespaces, EgressRuleInvalid, EgressSetupFailed

pytestmark = pytest.mark.integration

SERVER = (
    "import socket,sys\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])));s.listen()\n"
    "while True:\n c,_=s.accept();c.sendall(b'ok');c.close()\n"
)
PROBE = (
    "import socket,sys\n"
    "try:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3);print(s.recv(9).decode())\n"
    "except OSError as e: print('errno', e.errno)\n"
)


def _host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def egress() -> Iterator[EgressNamespaces]:
    ns = EgressNamespaces("jge", pool="10.217.0.0/16")
    ns.teardown()
    before = _host_ruleset()
    try:
        yield ns
    finally:
        ns.teardown()
        assert _host_ruleset() == before, "the host's nftables ruleset changed"


def _connect(ns: str | None, host: str, port: int) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run(prefix + [sys.executable, "-c", PROBE, host, str(port)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def _serve(ns: str | None, host: str, port: int) -> subprocess.Popen[bytes]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    proc = subprocess.Popen(prefix + [sys.executable, "-c", SERVER, host, str(port)])
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(prefix + ["ss", "-ltnH"], capture_output=True, text=True).stdout
        if f":{port}" in out:
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server on {host}:{port} never listened")
        time.sleep(0.05)


def test_users_get_separate_namespaces_and_cannot_reach_each_other(egress: EgressNamespaces) -> None:
    alice = egress.create("alice", Egress(), hub_addresses=[egress.hub_rule(18081)])
    bob = egress.create("bob", Egress(allow=(EgressRule("10.217.0.0/17", (8888,)),)),
                        hub_addresses=[egress.hub_rule(18081)])
    servers = [_serve(alice.name, "0.0.0.0", 8888)]
    try:
        assert alice.address != bob.address and Path(alice.path).exists()
        # Even with an allow rule for the user range, the router keeps users apart.
        assert _connect(bob.name, alice.address, 8888).startswith("errno")
        # The host (hub and proxy) reaches the notebook port, and nothing else.
        assert _connect(None, alice.address, 8888) == "ok"
        assert _connect(None, alice.address, 22).startswith("errno")
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        egress.destroy("alice")
        egress.destroy("bob")
    assert not Path(alice.path).exists() and not Path(bob.path).exists()


def test_hub_is_reachable_only_on_its_port(egress: EgressNamespaces) -> None:
    user = egress.create("carol", Egress(), hub_addresses=[egress.hub_rule(18082)])
    servers = [_serve(None, egress.hub_address, 18082), _serve(None, egress.hub_address, 18083)]
    try:
        assert _connect(user.name, egress.hub_address, 18082) == "ok"
        assert _connect(user.name, egress.hub_address, 18083) == "errno 113"
        routes = egress.routes("carol")
        assert "default" not in routes and f"{egress.hub_address} via {user.gateway}" in routes
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        egress.destroy("carol")


def test_recreate_replaces_leftovers_and_destroy_is_idempotent(egress: EgressNamespaces) -> None:
    first = egress.create("dave", Egress(), hub_addresses=[])
    second = egress.create("dave", Egress(), hub_addresses=[])
    assert second.address == first.address
    egress.destroy("dave")
    egress.destroy("dave")
    assert "jge-u-dave" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                              text=True).stdout


def test_bad_decision_leaves_nothing_behind(egress: EgressNamespaces) -> None:
    with pytest.raises(EgressRuleInvalid):
        egress.create("erin", Egress(allow=(EgressRule("999.1.1.1/32"),)), hub_addresses=[])
    assert not Path("/run/netns/jge-u-erin").exists()


def test_failed_setup_rolls_back(egress: EgressNamespaces, monkeypatch: pytest.MonkeyPatch) -> None:
    import jovial_guard.hardening.netns as netns

    real_load = netns.routes_and_ruleset

    def failing_load(name: str, fn: Any, ruleset: str, *, what: str) -> str:
        if name == "jge-u-frank":
            raise EgressSetupFailed("injected failure applying rules")
        return real_load(name, fn, ruleset, what=what)

    monkeypatch.setattr(netns, "routes_and_ruleset", failing_load)
    with pytest.raises(EgressSetupFailed, match="injected"):
        egress.create("frank", Egress(), hub_addresses=[])
    assert not Path("/run/netns/jge-u-frank").exists()
    assert "jge-u-frank" not in egress.names()


def test_teardown_removes_router_and_host_link() -> None:
    ns = EgressNamespaces("jgf", pool="10.216.0.0/16")
    ns.create("gina", Egress(), hub_addresses=[])
    ns.attach_service("svc", "198.51.100.200")
    assert Path("/sys/class/net/jgf-hub").exists()
    ns.teardown()
    assert not Path("/sys/class/net/jgf-hub").exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "jgf-" not in listed
    assert "10.216." not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout


def test_two_instances_on_one_pool_are_refused() -> None:
    first = EgressNamespaces("jgp", pool="10.215.0.0/16")
    second = EgressNamespaces("jgq", pool="10.215.0.0/16")
    try:
        first.ensure_router()
        with pytest.raises(EgressSetupFailed, match="already in use"):
            second.ensure_router()
        assert Path("/sys/class/net/jgp-hub").exists()
    finally:
        second.teardown()
        first.teardown()
