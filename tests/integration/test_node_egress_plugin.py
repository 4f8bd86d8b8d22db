"""The chained CNI plugin and the agent's egress socket, on a real network namespace.

The plugin runs as the container runtime runs it (a process with ``CNI_*`` variables and the
conflist entry on stdin); the agent's socket server loads the rules with ``nft`` inside the
namespace the plugin handed over. The pod lookup is the one stand-in (the cluster test runs
it against the real API server): everything else is the real plugin, socket, kernel and nft.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.hardening import netns
from jovial_guard.node.cni_plugin import PLUGIN_TYPE
from jovial_guard.node.egress import EgressAgent, EgressServer, EgressSettings, install_plugin

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.214.9.20/24"}]}
PODS: dict[tuple[str, str], dict[str, Any]] = {
    ("jhub", "jupyter-alice"): {"uid": "u-alice", "node": "n1",
                                "labels": {"component": "singleuser-server", "egress.jovial-guard.io/astro": "allow"}},
    # A notebook only by its name or claims: no component label, the webhook's record.
    ("jhub", "jupyter-bob"): {"uid": "u-bob", "node": "n1", "labels": {"app": "x"},
                              "annotations": {"jovial-guard.io/notebook": "true"}},
    ("jhub", "hub-0"): {"uid": "u-hub", "node": "n1", "labels": {"component": "hub"}},
    ("jhub", "elsewhere"): {"uid": "u-x", "node": "n2", "labels": {"component": "singleuser-server"}},
}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, nft)", pytrace=False)
    work = tmp_path_factory.mktemp("cni")
    settings = EgressSettings.load(REPO / "policies" / "data.json", hub=["10.214.9.1/32"], hub_ports=[8081],
                                   ingress_from=[], notebook_port=8888)
    server = EgressServer(work / "sock" / "egress.sock",
                          EgressAgent(settings, lambda ns, name: PODS.get((ns, name)), node_name="n1"))
    server.serve_in_thread()
    try:
        yield install_plugin(work / "bin", python="/usr/bin/python3"), server.path
    finally:
        server.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"jgcni-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def run_plugin(binary: Path, socket_path: Path, *, command: str, pod: str, netns_path: str,
               namespaces: list[str] | None = None) -> tuple[int, dict[str, Any] | None]:
    conf = {"cniVersion": "1.0.0", "name": "pods", "type": PLUGIN_TYPE, "socket": str(socket_path),
            "namespaces": namespaces or ["jhub"], "prevResult": PREV}
    uid = PODS.get(("jhub", pod), {}).get("uid", "u-unknown")
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": netns_path, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(binary.parent), "PATH": "/usr/bin:/bin",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=jhub;K8S_POD_NAME={pod};K8S_POD_UID={uid}"}
    proc = subprocess.run([str(binary)], input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def ruleset(name: str) -> str:
    return netns.nft(name, ["list", "ruleset"], what="list")


def test_notebook_pod_gets_its_groups_rules_before_it_starts(plugin: tuple[Path, Path], namespace: str) -> None:
    binary, sock = plugin
    rc, out = run_plugin(binary, sock, command="ADD", pod="jupyter-alice", netns_path=str(netns.path_of(namespace)))
    assert (rc, out) == (0, PREV), out
    rules = ruleset(namespace)
    assert "table inet jovial_guard" in rules and "policy drop" in rules
    assert "ip daddr 10.213.250.0/24 tcp dport { 80, 443 }" in rules  # the astro group's archive
    assert "ip daddr 10.214.9.1 tcp dport 8081" in rules  # the hub
    assert "ip daddr 169.254.0.0/16" in rules and "reject" in rules


def test_a_pod_the_webhook_recorded_as_a_notebook_gets_notebook_rules(plugin: tuple[Path, Path],
                                                                      namespace: str) -> None:
    binary, sock = plugin
    rc, out = run_plugin(binary, sock, command="ADD", pod="jupyter-bob", netns_path=str(netns.path_of(namespace)))
    assert (rc, out) == (0, PREV), out
    rules = ruleset(namespace)
    assert "table inet jovial_guard" in rules and "policy drop" in rules
    assert "10.213.250.0/24" not in rules  # no group labels: only what every notebook gets


def test_platform_pod_is_passed_through(plugin: tuple[Path, Path], namespace: str) -> None:
    binary, sock = plugin
    assert run_plugin(binary, sock, command="ADD", pod="hub-0", netns_path=str(netns.path_of(namespace))) == (0, PREV)
    assert "jovial_guard" not in ruleset(namespace)


@pytest.mark.parametrize("pod", ["unknown-pod", "elsewhere"])
def test_unknown_or_foreign_pod_fails_closed(plugin: tuple[Path, Path], namespace: str, pod: str) -> None:
    binary, sock = plugin
    rc, out = run_plugin(binary, sock, command="ADD", pod=pod, netns_path=str(netns.path_of(namespace)))
    assert rc == 1 and out is not None and out["code"] == 11, out
    assert "the node agent refused" in out["msg"]


def test_no_agent_fails_closed_and_other_namespaces_do_not_depend_on_it(plugin: tuple[Path, Path], namespace: str,
                                                                        tmp_path: Path) -> None:
    binary, _sock = plugin
    rc, out = run_plugin(binary, tmp_path / "absent.sock", command="ADD", pod="jupyter-alice",
                         netns_path=str(netns.path_of(namespace)))
    assert rc == 1 and out is not None and "the pod does not start without them" in out["msg"], out
    assert run_plugin(binary, tmp_path / "absent.sock", command="ADD", pod="jupyter-alice",
                      netns_path=str(netns.path_of(namespace)), namespaces=["other"]) == (0, PREV)
    # DEL never blocks a pod's removal, agent or not; VERSION answers.
    assert run_plugin(binary, tmp_path / "absent.sock", command="DEL", pod="jupyter-alice", netns_path="")[0] == 0
    rc, out = run_plugin(binary, tmp_path / "absent.sock", command="VERSION", pod="x", netns_path="")
    assert rc == 0 and out is not None and "1.0.0" in out["supportedVersions"]
