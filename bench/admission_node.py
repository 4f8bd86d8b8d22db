"""Admission through the real kube-apiserver to the chart's webhook pod: compiled policy vs OPA sidecar.

The single-node test cluster (tests/integration/node_cluster.py: kube-apiserver, kubelet,
containerd) with the chart installed in signed-bundle mode as documented
(tests/integration/node_chart_bundles.py), the webhook a pod on the node. Each request is a
``create`` of a new KubeSpawner pod (KubeSpawner's own make_pod, a few dozen users, every
pod with a unique name, annotation and environment value, so no decision cache answers it),
sent as the hub with ``dryRun=All``: the API server authenticates, calls the mutating and the
validating webhook through the Service's endpoints, validates, and stores nothing.

Both engines are measured in the same run, in alternating rounds, the chart switched between
them by ``helm upgrade --set webhook.engine=...`` (the rollout waited for, then the API server
seen calling the new pod): ``wasm``, each webhook worker evaluating the compiled policy of the
signed bundle, and ``opa``, the webhook asking its OPA sidecar. A third figure, the same
creates in a namespace no webhook guards, is the API server's own cost.

    python bench/admission_node.py [--n 150] [--rounds 2]

The last line reads
``admission_node: n=N wasm_p50_ms=.. wasm_p99_ms=.. opa_p50_ms=.. opa_p99_ms=..``
(N requests per engine, sequential, latency as the client sees it).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from tests.admission.kubespawner_pods import kubespawner_pod_sync  # noqa: E402
from tests.integration.node_chart import APISERVER_ARGS, hub_identity, wait_until_called  # noqa: E402
from tests.integration.node_chart_bundles import signed_release, upgrade_engine  # noqa: E402
from tests.integration.node_cluster import NodeCluster  # noqa: E402
from tests.integration.node_isolation_pods import allow_hub, as_hub, until  # noqa: E402

HUB_NS, _ = hub_identity()
PLAIN_NS = "bench-unguarded"
USERS = 30


def templates() -> list[dict[str, Any]]:
    """KubeSpawner's pods for ``USERS`` users, a third of them in the astro group."""
    return [kubespawner_pod_sync(username=f"user{i}", groups=("astro",) if i % 3 == 0 else (), namespace=HUB_NS)
            for i in range(USERS)]


def distinct(pods: list[dict[str, Any]], i: int, namespace: str) -> dict[str, Any]:
    """Template ``i`` (cycling) made a pod never sent before."""
    pod = copy.deepcopy(pods[i % len(pods)])
    nonce = uuid.uuid4().hex
    pod["metadata"].update(name=f"jupyter-bench-{nonce[:12]}", namespace=namespace)
    pod["metadata"].setdefault("annotations", {})["bench.jovial-guard.io/nonce"] = nonce
    container = pod["spec"]["containers"][0]
    container["env"] = [*container.get("env", []), {"name": "BENCH_NONCE", "value": nonce}]
    return pod


def timed_creates(pods_api: Any, pods: list[dict[str, Any]], start: int, n: int, namespace: str) -> list[float]:
    """Milliseconds per dry-run create of ``n`` distinct pods; every one must be admitted."""
    out = []
    for i in range(start, start + n):
        pod = distinct(pods, i, namespace)
        began = time.perf_counter()
        stored = pods_api.create(body=pod, namespace=namespace, dry_run="All")
        out.append((time.perf_counter() - began) * 1000)
        hardened = (stored.spec.securityContext or {}).get("seccompProfile") is not None
        if hardened != (namespace == HUB_NS):
            raise SystemExit(f"pod {i} in {namespace}: hardened={hardened}: the webhook was "
                             f"{'not ' if namespace == HUB_NS else ''}called")
    return out


def webhook_engine(core: client.CoreV1Api) -> str:
    """The engine of the one webhook pod serving (``--engine=`` in its arguments), once only one exists."""
    pods = [p for p in core.list_namespaced_pod("jovial-guard", label_selector="app.kubernetes.io/name=jovial-guard-webhook").items]
    if len(pods) != 1 or not any(c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []):
        return ""
    args = next(c for c in pods[0].spec.containers if c.name == "webhook").args
    return "wasm" if "--engine=wasm" in args else "opa"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=150, help="distinct pods per engine (default 150)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations wasm/opa (default 2)")
    parser.add_argument("--warmup", type=int, default=10, help="requests before each round, not counted")
    args = parser.parse_args()
    if args.n < args.rounds or args.rounds < 1:
        parser.error("--n must be at least --rounds, and --rounds at least 1")
    os.environ.setdefault("JOVIAL_GUARD_STATE_DIR", tempfile.mkdtemp(prefix="jovial-guard-bench-state."))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    pods = templates()
    results: dict[str, list[float]] = {"wasm": [], "opa": [], "none": []}
    with tempfile.TemporaryDirectory(prefix="jg-admission-node-") as tmp, \
            NodeCluster(apiserver_args=APISERVER_ARGS, preinstall_profiles=False) as node, \
            signed_release(node, Path(tmp), engine="wasm") as signed:
        core = signed.core
        until(f"the default ServiceAccount of {HUB_NS}", lambda: node.get_object("serviceaccount", "default", HUB_NS), timeout=60)
        allow_hub(core, HUB_NS)
        core.create_namespace({"metadata": {"name": PLAIN_NS}})
        until(f"the default ServiceAccount of {PLAIN_NS}", lambda: node.get_object("serviceaccount", "default", PLAIN_NS), timeout=60)
        allow_hub(core, PLAIN_NS)
        hub = DynamicClient(as_hub(node)).resources.get(api_version="v1", kind="Pod")
        per_round = args.n // args.rounds
        sent = 0
        engine = "wasm"
        for round_no in range(args.rounds * 2):
            if round_no:
                engine = "opa" if engine == "wasm" else "wasm"
                began = time.monotonic()
                upgrade_engine(signed, engine)
                until(f"one Ready webhook pod with engine {engine}", lambda e=engine: webhook_engine(core) == e, timeout=180)
                wait_until_called(node, HUB_NS)
                print(f"switched to {engine} in {time.monotonic() - began:.1f} s", flush=True)
            else:
                until("one Ready webhook pod with engine wasm", lambda: webhook_engine(core) == "wasm", timeout=180)
            count = per_round if round_no < (args.rounds - 1) * 2 else args.n - per_round * (args.rounds - 1)
            timed_creates(hub, pods, sent, args.warmup, HUB_NS)
            sent += args.warmup
            results[engine] += timed_creates(hub, pods, sent, count, HUB_NS)
            sent += count
            results["none"] += timed_creates(hub, pods, sent, count // 2, PLAIN_NS)
            sent += count // 2
            print(f"round {round_no + 1} ({engine}, load {os.getloadavg()[0]:.2f}): p50 "
                  f"{statistics.median(results[engine][-count:]):.2f} ms", flush=True)
    for name, values in results.items():
        print(f"{name:>5}: n={len(values)} p50={pct(values, 0.5):.2f} ms p90={pct(values, 0.9):.2f} ms "
              f"p99={pct(values, 0.99):.2f} ms mean={statistics.fmean(values):.2f} ms")
    print(f"no webhook (namespace not guarded): p50_ms={pct(results['none'], 0.5):.2f} "
          f"p99_ms={pct(results['none'], 0.99):.2f}")
    print(f"load average at end: {os.getloadavg()}")
    print(f"admission_node: n={len(results['wasm'])} wasm_p50_ms={pct(results['wasm'], 0.5):.2f} "
          f"wasm_p99_ms={pct(results['wasm'], 0.99):.2f} opa_p50_ms={pct(results['opa'], 0.5):.2f} "
          f"opa_p99_ms={pct(results['opa'], 0.99):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
