"""Benchmark: decisions through jovial_guard's path vs. the same OPA queried directly.

Both rows use the same managed OPA, the same policy, the same inputs (a mix of compliant,
fixable and dangerous notebook pods) and the same concurrency, in one process:

* project: what ``jovial-guard check`` runs on parsed documents (``check_documents``):
  normalize -> PolicyEngine.decide_batch (a few dozen inputs per query to the batch entry
  point, deadline, fail closed) -> render the patch of each; the decisions come from OPA's
  compiled policy in process (``--engine wasm``, check's default: ``opa build -t wasm`` of
  the same policies) or, with ``--engine opa``, from the managed OPA below;
* opa:     a bare aiohttp POST of each input to /v1/data/jovial_guard/main/decision
  (``--concurrency`` in flight): OPA's own rate for single decisions.

Last line: ``check: project_per_s=X opa_per_s=Y ratio=Z p99_ms=W`` (W: project p99, the time
a document waits for its batch query's answer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, Awaitable, Callable

import aiohttp

from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.check import Document, check_documents
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, policy_revision
from jovial_guard.policy.wasm_bundle import compile_directory
from jovial_guard.policy.wasm_engine import WasmConnection

IMAGE = "quay.io/jupyter/scipy-notebook:2024-05-27"


def pods(n: int) -> list[dict[str, Any]]:
    """Realistic notebook pods: 1/3 compliant, 1/3 fixable (bare), 1/3 dangerous."""
    out = []
    for i in range(n):
        meta = {"name": f"jupyter-user{i}", "labels": {"component": "singleuser-server", "hub.jupyter.org/username": f"user{i}"},
                "annotations": {"hub.jupyter.org/username": f"user{i}"}}
        container: dict[str, Any] = {"name": "notebook", "image": IMAGE, "ports": [{"containerPort": 8888}],
                                     "env": [{"name": "JUPYTERHUB_USER", "value": f"user{i}"}]}
        spec: dict[str, Any] = {"containers": [container], "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": f"claim-user{i}"}}]}
        container["volumeMounts"] = [{"name": "home", "mountPath": "/home/jovyan"}]
        kind = i % 3
        if kind == 0:
            spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 100, "seccompProfile": {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"}}
            container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
            container["resources"] = {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "100m", "memory": "512Mi"}}
            container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
            spec["volumes"].append({"name": "tmp", "emptyDir": {}})
        elif kind == 2:
            spec["hostNetwork"] = True
            container["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    return out


async def timed(n_concurrent: int, items: list[Any], one: Callable[[Any], Awaitable[Any]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            item = queue.pop()
            start = time.perf_counter()
            await one(item)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n_concurrent)))
    return time.perf_counter() - start, latencies


def summary(name: str, n: int, elapsed: float, lat: list[float]) -> tuple[float, float]:
    lat.sort()
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    rate = n / elapsed
    print(f"{name:8s} decisions={n} per_s={rate:9.1f} p50_ms={p50:7.2f} p99_ms={p99:7.2f}")
    return rate, p99


async def main(n: int, concurrency: int, rounds: int, engine_name: str) -> None:
    docs = pods(n)
    with ManagedOpa() as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=5.0) as conn, aiohttp.ClientSession() as session:
            waits: list[float] = []
            source: OpaConnection | WasmConnection = conn
            if engine_name == "wasm":
                artifact = compile_directory(DEFAULT_POLICY_DIR, policy_revision(DEFAULT_POLICY_DIR))
                source = WasmConnection.from_artifact(artifact, deadline=5.0)
            engine = PolicyEngine(source, deadline=5.0, listeners=[lambda w, d, seconds: waits.append(seconds)])
            url = f"{opa.url}/v1/data/jovial_guard/main/decision"
            inputs = [workload_from_object(d).to_input() for d in docs]
            documents = [Document("bench.yaml", i, body=d) for i, d in enumerate(docs)]

            async def project() -> float:
                start = time.perf_counter()
                results = await check_documents(documents, engine)
                if len(results) != n or any(r.error for r in results):
                    raise RuntimeError("check did not decide every document")
                return time.perf_counter() - start

            async def direct(input_doc: dict[str, Any]) -> None:
                async with session.post(url, json={"input": input_doc}) as resp:
                    body = await resp.json()
                    if "result" not in body:
                        raise RuntimeError("undefined decision")

            # Warm both paths, then alternate rounds so neither gets a warmer OPA.
            await project()
            await timed(concurrency, inputs[:50], direct)
            waits.clear()
            p_elapsed = o_elapsed = 0.0
            o_lat: list[float] = []
            for _ in range(rounds):
                p_elapsed += await project()
                e, lat = await timed(concurrency, inputs, direct)
                o_elapsed += e
                o_lat += lat
    print(f"{n} pods x {rounds} rounds; project: check_documents (batch entry point, engine {engine_name}); "
          f"opa: single decisions, concurrency {concurrency}; one managed OPA on loopback")
    project_rate, project_p99 = summary("project", n * rounds, p_elapsed, waits)
    opa_rate, _ = summary("opa", n * rounds, o_elapsed, o_lat)
    print(f"check: project_per_s={project_rate:.1f} opa_per_s={opa_rate:.1f} ratio={project_rate / opa_rate:.3f} p99_ms={project_p99:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=600, help="pods per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", choices=("wasm", "opa"), default="wasm", help="the project's decision engine")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency, args.rounds, args.engine))
