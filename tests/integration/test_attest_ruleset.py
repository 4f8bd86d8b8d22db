"""The ruleset digest on the real kernel: what a namespace's rules read back as.

A namespace made from a decision carries, in its handle, the digest of the rules the kernel
holds right after loading; read again later it is the same (counters move, the digest does
not). A flush or one added rule changes it. The audit service's drop-all (``cut_network``)
is recognised as such, and the host's own namespace is never read.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from jovial_guard.audit.netcut import DROP_ALL
from jovial_guard.decision import Egress, EgressRule
from jovial_guard.hardening import netns
from jovial_guard.hardening.egress import EgressNamespaces, EgressSetupFailed
from jovial_guard.hardening.egress_digest import EMPTY_DIGEST, digest_listing, is_cut, live_digest, live_listing

pytestmark = pytest.mark.integration


def _free_pool() -> str:
    taken = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=False).stdout
    for second in range(120, 160):
        if f"10.{second}." not in taken:
            return f"10.{second}.0.0/16"
    raise RuntimeError("no free 10.x.0.0/16 pool")


@pytest.fixture(scope="module")
def egress() -> Iterator[EgressNamespaces]:
    namespaces = EgressNamespaces("jgat", pool=_free_pool())
    namespaces.teardown()
    try:
        yield namespaces
    finally:
        namespaces.teardown()


def test_digest_is_what_the_kernel_holds_and_changes_with_the_rules(egress: EgressNamespaces) -> None:
    rule = EgressRule(cidr="10.213.250.0/24", ports=(443,), protocol="tcp", comment="archive")
    handle = egress.create("alice", Egress(allow=(rule,)), hub_addresses=[])
    assert handle.ruleset_digest.startswith("v1:sha256:")
    # Traffic moves the counters; the digest stays.
    subprocess.run(["ip", "netns", "exec", handle.name, sys.executable, "-c",
                    "import socket\ntry: socket.create_connection(('10.213.250.1', 443), timeout=0.5)\n"
                    "except OSError: pass"], check=False, timeout=30)
    assert live_digest(handle.name) == handle.ruleset_digest
    assert not is_cut(live_listing(handle.name))
    netns.nft(handle.name, ["add", "rule", "inet", "jovial_guard", "output", "accept"], what="test")
    assert live_digest(handle.name) != handle.ruleset_digest
    netns.nft(handle.name, ["flush", "ruleset"], what="test")
    assert live_digest(handle.name) == EMPTY_DIGEST
    netns.apply_ruleset(handle.name, DROP_ALL, what="test")
    listing = live_listing(handle.name)
    assert is_cut(listing) and digest_listing(listing) != handle.ruleset_digest


def test_the_hosts_namespace_is_never_read() -> None:
    name = "jgat-hostalias"
    netns.NETNS_DIR.mkdir(parents=True, exist_ok=True)
    target = netns.path_of(name)
    target.touch()
    try:
        subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(target)], check=True)
        with pytest.raises(EgressSetupFailed, match="host's own"):
            live_listing(name)
    finally:
        subprocess.run(["umount", str(target)], check=False)
        target.unlink(missing_ok=True)
