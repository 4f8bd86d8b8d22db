"""A notebook pod with ``hostUsers: false`` on the real node: its own user namespace.

The pod is KubeSpawner's, hardened by ``render_pod_patch`` with the spec the policy gives a
notebook when ``settings.node.user_namespaces`` is on (``hostUsers: false`` added). The node
runs containerd with the project's runc build (``jovial_guard.runtime.runc``): Debian's
runc 1.1.5 has no ``features`` command and no idmapped mounts, so containerd reports no
user-namespace support and the kubelet refuses such pods (README, "Not finished"). The
pod's mapped root must be able to traverse to its rootfs under containerd's state, so the
cluster's directory and its parents get search permission for others (``o+x``). Inside,
the container reports its uid map: container uid 1000 must map to a host uid other than
1000, taken from the kubelet's range for pods (never the host's ids).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest

from jovial_guard.decision import ProfileRef

from .node_tools import require_node

pytestmark = pytest.mark.integration

require_node()

import jsonpatch
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from jovial_guard.hardening.render_pod import render_pod_patch
from jovial_guard.runtime.runc import runc_path

from .node_cluster import NodeCluster
from .node_isolation_pods import wait_finished
from .node_pods import NAMESPACE, probe_pod, security_spec

REPORT = """
import json, os
out = {"uid": os.getuid(), "uid_map": open("/proc/self/uid_map").read().split(),
       "gid_map": open("/proc/self/gid_map").read().split()}
open("/dev/termination-log", "w").write(json.dumps(out))
"""


@pytest.fixture(scope="module")
def node() -> Iterator[NodeCluster]:
    previous = os.environ.get("JOVIAL_GUARD_RUNC")
    os.environ["JOVIAL_GUARD_RUNC"] = str(runc_path())
    try:
        cluster = NodeCluster()
        for directory in (cluster.dir, *cluster.dir.parents):
            mode = directory.stat().st_mode
            if not mode & 0o001:
                directory.chmod((mode & 0o7777) | 0o011)
        with cluster:
            yield cluster
    finally:
        if previous is None:
            os.environ.pop("JOVIAL_GUARD_RUNC", None)
        else:
            os.environ["JOVIAL_GUARD_RUNC"] = previous
    cluster.fail_on_leftovers()


@pytest.fixture(scope="module")
def core(node: NodeCluster) -> client.CoreV1Api:
    api = client.CoreV1Api(config.new_client_from_config(str(node.kubeconfig)))
    node.make_namespace(api, NAMESPACE)
    return api


def _run(core: client.CoreV1Api, pod: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    DynamicClient(core.api_client).resources.get(api_version="v1", kind="Pod").create(
        body=pod, namespace=NAMESPACE)
    return wait_finished(core, pod["metadata"]["name"], NAMESPACE, timeout=timeout)


def test_a_notebook_pod_gets_its_own_user_namespace(core: client.CoreV1Api) -> None:
    pod = probe_pod("userns-notebook", NAMESPACE)
    pod["spec"]["containers"][0]["command"] = ["python", "-c", REPORT]
    spec = dataclasses.replace(security_spec(ProfileRef("RuntimeDefault")), host_users=False)
    ops = render_pod_patch(pod, spec)
    assert {"op": "add", "path": "/spec/hostUsers", "value": False} in ops
    report = _run(core, jsonpatch.apply_patch(pod, ops))
    first, host, size = (int(x) for x in report["uid_map"])
    assert report["uid"] == 1000 and first == 0 and size == 65536
    assert host >= 65536 and host + 1000 != 1000  # the kubelet's pod range, never host ids
    assert report["gid_map"] == report["uid_map"]
