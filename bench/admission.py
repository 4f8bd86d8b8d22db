"""Admission benchmark: jovial-guard's webhook vs a bare OPA acting as the webhook.

Both endpoints get the same AdmissionReview stream (compliant, fixable and dangerous
notebook pods made by KubeSpawner's own make_pod, for many users), over HTTPS on
loopback, in one run:

* peer: ``opa run --server`` over TLS, loaded with policies/ and bench/opa_webhook/
  adapter.rego, answering POST /v0/data/bench/opa_webhook/review with an AdmissionReview
  response (the same Rego decision; it cannot render the hardening patch);
* ours: ``jovial-guard webhook serve`` (decision cache + worker processes), endpoint /mutate
  (decision + JSON Patch) and /validate, deciding with OPA's compiled policy (``opa build -t
  wasm``, carried in a signed bundle built here) in each worker (``--engine wasm``, the
  default), or with ``--engine opa`` in front of an OPA sidecar on loopback.

The headline stream is *distinct workloads*, what a real cluster sends (every user's pod
differs): the stream cycles over a few hundred templates, and every request gets a value
never sent before (an annotation, a container environment variable and the request uid),
so no decision cache can answer it and every request is a real policy decision. The
repeated stream (the same templates again and again: what the decision cache answers) is
measured as a secondary figure, ``hit_rps16``.

First a spawn storm (every distinct review at once, cold cache: OPA does all the work),
then the two endpoints' agreement on every template, then the load runs; the run without
the cache and the bare decision endpoint are printed too, so each part's share is visible.

Closed loop: wrk (Debian) at 1, 16 and 64 connections, req/s, p50, p99 (with N clients the
mean latency is N / throughput: Little's law). Open loop: an asyncio generator sends at a
fixed rate (100, 500, 1000 req/s) and measures each latency from the request's *scheduled*
send time, so queueing in the client or the server is not hidden (the headline p99); when
scripts/setup.d/55-vegeta.sh built vegeta, the same rates are run with it too (a Go
generator with a much lower floor of its own). Between runs the script waits until the
servers are idle: an overloaded OPA keeps evaluating requests its clients gave up on.
Everything is bounded in count and time and stays on 127.0.0.1.

    python bench/admission.py [--duration 5] [--workers 2] [--users 300]

The last line reads
``admission: rate=500 p99_ms=X rps16=Y opa_rps16=Z ratio=R hit_rps16=H``: X the open-loop
p99 of /mutate at 500 distinct reviews/s (vegeta when built: its own floor is far lower than
the Python generator's; else the Python generator), Y and Z /mutate and the bare OPA at 16
connections on distinct reviews, R = Y/Z, H /mutate at 16 connections on the repeated
stream (decision-cache hits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jsonpatch

from bench.loadgen import NONCE, NONCES, process_tree, find_vegeta, open_loop, storm, vegeta_open_loop, wait_idle, wrk
from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.policy.opa_process import (
    DEFAULT_POLICY_DIR,
    ManagedOpa,
    find_opa,
    free_loopback_port,
    policy_revision,
)
from tests.admission.kubespawner_pods import (
    admission_review,
    as_api_server_sends,
    kubespawner_pod,
)

HUB_SA = "system:serviceaccount:jhub:hub"
CONNECTIONS = (1, 16, 64)
RATES = (100, 500, 1000)


# -- the stream -----------------------------------------------------------------------------

def _dangerous(pod: dict[str, Any], i: int) -> dict[str, Any]:
    bad = json.loads(json.dumps(pod))
    container = bad["spec"]["containers"][0]
    variant = i % 4
    if variant == 0:
        container.setdefault("securityContext", {})["privileged"] = True
    elif variant == 1:
        bad["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
        container["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]
    elif variant == 2:
        bad["spec"]["hostNetwork"] = True
    else:
        container["image"] = "docker.io/library/ubuntu:latest"
    return bad


async def build_stream(users: int) -> list[dict[str, Any]]:
    """Reviews for ``users`` users: 40% compliant (already hardened), 40% fixable (KubeSpawner
    as-is), 20% dangerous; shuffled with a fixed seed."""
    from jovial_guard.admission.handler import AdmissionHandler
    from jovial_guard.policy.client import OpaConnection, OpaEndpoint
    from jovial_guard.policy.engine import PolicyEngine

    profiles = [("default", ()), ("large-memory", ("large-memory",)), ("default", ("astro",)), ("bare", ())]
    reviews: list[dict[str, Any]] = []
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url)) as conn:
            handler = AdmissionHandler(PolicyEngine(conn))
            for i in range(users):
                profile, groups = profiles[i % len(profiles)]
                pod = as_api_server_sends(await kubespawner_pod(username=f"student{i:03d}", groups=groups, profile=profile))
                kind = "fixable" if i % 5 in (0, 1) else "compliant" if i % 5 in (2, 3) else "dangerous"
                if kind == "compliant":
                    result = await handler.handle(json.dumps(admission_review(pod, username=HUB_SA)).encode(), mode="mutate")
                    patch = result.body["response"].get("patch")
                    if patch:
                        import base64

                        pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(patch)))
                elif kind == "dangerous":
                    pod = _dangerous(pod, i)
                reviews.append(admission_review(with_nonce_slots(pod), username=HUB_SA, uid=f"bench-{i:05d}-{NONCE}"))
    random.Random(7).shuffle(reviews)
    return reviews


def with_nonce_slots(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with places for a per-request value: an annotation and an environment
    variable of the first container (both part of what the policy is asked about)."""
    pod = json.loads(json.dumps(pod))
    pod.setdefault("metadata", {}).setdefault("annotations", {})["bench.jovial-guard.io/nonce"] = NONCE
    container = pod["spec"]["containers"][0]
    container["env"] = [*(container.get("env") or []), {"name": "BENCH_NONCE", "value": NONCE}]
    return pod




# -- servers --------------------------------------------------------------------------------

def _wait_https(url: str, ca: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=1) as resp:
                if resp.status == 200:
                    return
        except Exception:  # noqa: BLE001 - poll until ready
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout}s: {log.read_text()[-2000:]}")


def start_peer_opa(workdir: Path, certs: Any) -> tuple[subprocess.Popen[bytes], str]:
    port = free_loopback_port()
    meta = workdir / "meta.json"
    meta.write_text(json.dumps({"jovial_guard_meta": {"revision": policy_revision(DEFAULT_POLICY_DIR)}}))
    log = workdir / "peer-opa.log"
    proc = subprocess.Popen(
        [find_opa(), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error", "--disable-telemetry",
         "--tls-cert-file", str(certs.cert), "--tls-private-key-file", str(certs.key),
         str(DEFAULT_POLICY_DIR), str(REPO / "bench" / "opa_webhook" / "adapter.rego"), str(meta)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    _wait_https(f"https://127.0.0.1:{port}/health", certs.ca_cert, proc, log)
    return proc, f"https://127.0.0.1:{port}/v0/data/bench/opa_webhook/review"


def signed_bundle(workdir: Path) -> list[str]:
    """A signed bundle of policies/ (with its compiled policy) and the webhook flags that
    make the webhook decide with it in process (``--engine wasm``)."""
    from jovial_guard.policy.bundles import SigningKey, build_bundle

    key = SigningKey.load_or_create(workdir / "keys")
    bundle = workdir / "bundle.tar.gz"
    build_bundle(DEFAULT_POLICY_DIR, bundle, key=key)
    return ["--engine", "wasm", "--bundle", str(bundle), "--bundle-key", str(key.public_path), "--bundle-key-id", key.key_id]


def start_webhook(workdir: Path, certs: Any, source: list[str], *, workers: int, cache: bool) -> tuple[subprocess.Popen[bytes], str]:
    """``source``: ``["--opa-url", URL]`` (the OPA sidecar) or :func:`signed_bundle`'s flags."""
    port = free_loopback_port()
    log = workdir / f"webhook-{port}.log"
    metrics_dir = Path(tempfile.mkdtemp(prefix="jg-bench-metrics-", dir=workdir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", *source, "--cert", str(certs.cert),
         "--key", str(certs.key), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--cache" if cache else "--no-cache", "--log-level", "WARNING"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    _wait_https(f"https://127.0.0.1:{port}/readyz", certs.ca_cert, proc, log)
    return proc, f"https://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def agreement(stream: list[dict[str, Any]], peer_url: str, ours_url: str, ca: Path) -> tuple[int, int]:
    """Both endpoints decide every review the same way (allowed or not)."""
    ctx = ssl.create_default_context(cafile=str(ca))

    def post(url: str, body: bytes) -> dict[str, Any]:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    mismatches = 0
    for review in stream:
        body = json.dumps(review).encode()
        a = post(peer_url, body)
        b = post(ours_url + "/mutate", body)
        if a["response"]["allowed"] != b["response"]["allowed"]:
            mismatches += 1
    return mismatches, len(stream)


# -- main -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop / open-loop run")
    parser.add_argument("--users", type=int, default=300, help="templates (users) the distinct stream cycles over")
    parser.add_argument("--workers", type=int, default=2, help="webhook worker processes")
    parser.add_argument("--quick", action="store_true", help="only what the last line needs (16 connections, 500/s)")
    parser.add_argument("--engine", choices=("wasm", "opa"), default="wasm",
                        help="ours decides with the compiled policy in each worker (wasm, from a signed bundle) "
                             "or asks an OPA sidecar (opa)")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if shutil.which("wrk") is None:
        print("bench/admission.py needs wrk (Debian package 'wrk')", file=sys.stderr)
        return 2
    connections = (16,) if args.quick else CONNECTIONS
    rates = (500,) if args.quick else RATES

    work = Path(tempfile.mkdtemp(prefix="jg-bench-admission-"))
    certs = write_webhook_certs(work / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    print(f"building the stream: {args.users} templates (KubeSpawner make_pod) ...", flush=True)
    stream = asyncio.run(build_stream(args.users))
    stream_file = work / "reviews.jsonl"
    templates = [json.dumps(r, separators=(",", ":")).encode() for r in stream]
    stream_file.write_bytes(b"\n".join(templates) + b"\n")
    size = sum(len(b) for b in templates) / len(templates)
    print(f"stream: {len(stream)} templates, mean {size / 1024:.1f} KiB each; distinct: every request gets a new "
          "annotation, environment value and uid")

    peer_proc, peer_url = start_peer_opa(work, certs)
    backend = ManagedOpa(DEFAULT_POLICY_DIR).start() if args.engine == "opa" else None
    source = ["--opa-url", backend.url] if backend else signed_bundle(work)
    print(f"ours: webhook with {args.workers} workers, engine {args.engine}"
          + (" (OPA sidecar on loopback)" if backend else " (compiled policy of a signed bundle, in each worker)"))
    ours_proc, ours_base = start_webhook(work, certs, source, workers=args.workers, cache=True)
    results: dict[Any, Any] = {}
    try:
        sidecar = [backend.pid or 0] if backend else []
        servers = [peer_proc.pid, *sidecar, *process_tree(ours_proc.pid)]
        storm_bodies = NONCES.bodies(templates, len(templates))
        print(f"\nspawn storm: {len(storm_bodies)} distinct reviews sent at once, cold cache (latency from the storm's start)")
        for name, url in (("opa", peer_url), ("ours", ours_base + "/mutate")):
            wait_idle(servers)
            r = asyncio.run(storm(url, storm_bodies, certs.ca_cert))
            print(f"  {name:<6} all answered in {r['seconds']:.2f} s, p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, "
                  f"deadline denials {r['deadline_denials']}")
        agreeing = [json.loads(b) for b in NONCES.bodies(templates, len(templates))]
        bad, n = agreement(agreeing, peer_url, ours_base, certs.ca_cert)
        print(f"agreement: {n - bad}/{n} reviews decided alike by bare OPA and jovial-guard ({bad} differ)")
        targets = {"opa": peer_url, "ours": ours_base + "/mutate", "ours-validate": ours_base + "/validate"}
        ours_pids = [*sidecar, *process_tree(ours_proc.pid)]
        print("\nclosed loop (wrk, HTTPS keep-alive), distinct workloads; cpu ms: server CPU per request "
              "(ours: webhook workers, plus the OPA sidecar with --engine opa)")
        print(f"  {'target':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms':>8}")
        for conns in connections:
            for name, url in targets.items():
                if name == "ours-validate" and conns != 16:
                    continue
                wait_idle(servers)
                wrk(url, stream_file, connections=conns, duration=1.0)  # warm-up
                r = wrk(url, stream_file, connections=conns, duration=args.duration,
                        servers=[peer_proc.pid] if name == "opa" else ours_pids)
                results[(name, conns)] = r
                print(f"  {name:<14}{conns:>6}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['cpu_ms']:>8.2f}")
            ratio = results[("ours", conns)]["rps"] / results[("opa", conns)]["rps"]
            print(f"  ratio ours/opa at {conns} connections: {ratio:.2f}")

        wait_idle(servers)
        wrk(ours_base + "/mutate", stream_file, connections=16, duration=1.0, distinct=False)  # fills the cache
        hit = wrk(ours_base + "/mutate", stream_file, connections=16, duration=args.duration, distinct=False, servers=ours_pids)
        results["hit16"] = hit
        print(f"\nrepeated stream (decision-cache hits): /mutate at 16 connections {hit['rps']:.0f} req/s, "
              f"p50 {hit['p50']:.2f} ms, p99 {hit['p99']:.2f} ms, cpu {hit['cpu_ms']:.2f} ms/request")

        print("\nopen loop (asyncio generator, latency from scheduled send time), distinct workloads")
        print(f"  {'target':<14}{'rate':>6}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for rate in rates:
            for name in ("ours", "opa"):
                wait_idle(servers)
                r = asyncio.run(open_loop(targets[name], templates, certs.ca_cert, rate=rate, duration=args.duration))
                results[(name, f"rate{rate}")] = r
                print(f"  {name:<14}{rate:>6}{r['achieved']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}")
        wait_idle(servers)
        r = asyncio.run(open_loop(targets["ours"], templates, certs.ca_cert, rate=500, duration=args.duration, distinct=False))
        print(f"  {'ours-repeated':<14}{500:>6}{r['achieved']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}")

        vegeta = find_vegeta()
        if vegeta:
            print("\nopen loop (vegeta, constant rate; latency from the actual send), distinct workloads")
            print(f"  {'target':<14}{'rate':>6}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
            for rate in rates:
                for name in ("ours", "opa"):
                    wait_idle(servers)
                    r = vegeta_open_loop(vegeta, targets[name], templates, certs.ca_cert, work, rate=rate, duration=args.duration)
                    results[(name, f"vegeta{rate}")] = r
                    print(f"  {name:<14}{rate:>6}{r['achieved']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}")
        else:
            print("\n(vegeta not built: scripts/bench.d/55-vegeta.sh; only the Python generator ran)")

        if not args.quick:
            # The adapter's share: the same OPA answering the bare decision (input already the
            # normalized workload, no AdmissionReview in or out, no `with`).
            from jovial_guard.normalize import workload_from_admission_review

            decision_file = work / "decisions.jsonl"
            decision_file.write_text("\n".join(json.dumps({"input": workload_from_admission_review(r).to_input()}, separators=(",", ":"))
                                               for r in stream) + "\n")
            wait_idle(servers)
            decision_url = peer_url.replace("/v0/data/bench/opa_webhook/review", "/v1/data/jovial_guard/main/decision")
            wrk(decision_url, decision_file, connections=16, duration=1.0)
            r = wrk(decision_url, decision_file, connections=16, duration=args.duration)
            print(f"\nbare OPA decision only (no AdmissionReview adapter): 16 connections {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")

            # The cache's share: the same closed loop without it.
            stop(ours_proc)
            nocache_proc, nocache_base = start_webhook(work, certs, source, workers=args.workers, cache=False)
            try:
                wait_idle([peer_proc.pid, *sidecar, *process_tree(nocache_proc.pid)])
                wrk(nocache_base + "/mutate", stream_file, connections=16, duration=1.0)
                r = wrk(nocache_base + "/mutate", stream_file, connections=16, duration=args.duration)
                print(f"\nwithout the decision cache: /mutate at 16 connections {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")
            finally:
                stop(nocache_proc)
    finally:
        stop(ours_proc)
        stop(peer_proc)
        if backend:
            backend.stop()
        shutil.rmtree(work, ignore_errors=True)

    rps16 = results[("ours", 16)]["rps"]
    opa16 = results[("opa", 16)]["rps"]
    p99 = results[("ours", "vegeta500")]["p99"] if ("ours", "vegeta500") in results else results[("ours", "rate500")]["p99"]
    print(f"targets: p99 <= 10 ms at 500 distinct req/s: {'met' if p99 <= 10 else 'MISSED'}; "
          f"rps16 >= bare OPA on distinct workloads: {'met' if rps16 >= opa16 else 'MISSED'}")
    print(f"admission: rate=500 p99_ms={p99:.2f} rps16={rps16:.0f} opa_rps16={opa16:.0f} ratio={rps16 / opa16:.2f} "
          f"hit_rps16={results['hit16']['rps']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
