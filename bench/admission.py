"""Admission benchmark: jovial-guard's webhook vs a bare OPA acting as the webhook.

Both endpoints get the same AdmissionReview stream (compliant, fixable and dangerous
notebook pods made by KubeSpawner's own make_pod, for many users), over HTTPS on
loopback, in one run:

* peer: ``opa run --server`` over TLS, loaded with policies/ and bench/opa_webhook/
  adapter.rego, answering POST /v0/data/bench/opa_webhook/review with an AdmissionReview
  response (the same Rego decision; it cannot render the hardening patch);
* ours: ``jovial-guard webhook serve`` (decision cache + worker processes) in front of an
  OPA sidecar on loopback, endpoint /mutate (decision + JSON Patch) and /validate.

First a spawn storm (every distinct review at once, cold cache: OPA does all the work),
then the two endpoints' agreement on every review, then the load runs (the stream cycles,
so the warm cache answers most of them; the run without the cache and the bare decision
endpoint are printed too, so each part's share is visible).

Closed loop: wrk (Debian) at 1, 16 and 64 connections, req/s, p50, p99 (with N clients the
mean latency is N / throughput: Little's law). Open loop: an asyncio generator sends at a
fixed rate (100, 500, 1000 req/s) and measures each latency from the request's *scheduled*
send time, so queueing in the client or the server is not hidden (the headline p99); when
scripts/setup.d/55-vegeta.sh built vegeta, the same rates are run with it too (a Go
generator with a much lower floor of its own). Between runs the script waits until the
servers are idle: an overloaded OPA keeps evaluating requests its clients gave up on.
Everything is bounded in count and time and stays on 127.0.0.1.

    python bench/admission.py [--duration 5] [--workers 2] [--users 200]

The last line reads ``admission: rate=500 p99_ms=X rps16=Y opa_rps16=Z ratio=R`` (R = Y/Z,
Y for /mutate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp
import jsonpatch

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
                reviews.append(admission_review(pod, username=HUB_SA, uid=f"bench-{i:05d}"))
    random.Random(7).shuffle(reviews)
    return reviews


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


def start_webhook(workdir: Path, certs: Any, opa_url: str, *, workers: int, cache: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_loopback_port()
    log = workdir / f"webhook-{port}.log"
    metrics_dir = Path(tempfile.mkdtemp(prefix="jg-bench-metrics-", dir=workdir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", opa_url, "--cert", str(certs.cert),
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


# -- load generators ------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, stream_file: Path, *, connections: int, duration: float) -> dict[str, float]:
    """Closed loop: wrk with ``connections`` keep-alive HTTPS connections for ``duration`` s."""
    threads = 1 if connections < 16 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "--latency",
         "-s", str(REPO / "bench" / "wrk_reviews.lua"), url, "--", str(stream_file)],
        capture_output=True, text=True, timeout=duration + 30, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if non2xx or errors:
        print(f"    wrk reported problems: {non2xx.group(0) if non2xx else ''} {errors.group(0) if errors else ''}")
    return {"rps": rps, "p50": p50, "p99": p99}


async def open_loop(url: str, bodies: list[bytes], ca: Path, *, rate: int, duration: float) -> dict[str, float]:
    """Send at ``rate``/s for ``duration`` s; latency from each request's scheduled time."""
    ctx = ssl.create_default_context(cafile=str(ca))
    loop = asyncio.get_running_loop()

    def quiet_shutdown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # uvloop reports TLS transports torn down at session close; they are not errors here.
        exc = context.get("exception")
        if isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_shutdown)
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(ssl=ctx, limit=512)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm the pool so TLS handshakes are not what we measure.
        await asyncio.gather(*(session.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}) for i in range(32)))

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except Exception:  # noqa: BLE001 - counted, not fatal
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "sent": total,
        "achieved": total / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": errors,
    }


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def wait_idle(pids: list[int], *, timeout: float = 30.0) -> None:
    """Wait until the servers under test stop burning CPU: an overloaded OPA keeps
    evaluating requests its clients gave up on, which would tax the next measurement."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_ticks(pids)
        time.sleep(0.5)
        if (_cpu_ticks(pids) - before) / hz < 0.05:  # < 10 % of one core over 0.5 s
            return


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in out)]


def find_vegeta() -> str | None:
    """vegeta from scripts/setup.d/55-vegeta.sh, if built."""
    local = REPO / ".tools" / "bin" / "vegeta"
    return str(local) if os.access(local, os.X_OK) else shutil.which("vegeta")


def vegeta_open_loop(vegeta: str, url: str, bodies: list[bytes], ca: Path, workdir: Path, *, rate: int, duration: float) -> dict[str, float]:
    """Open loop with vegeta (Go, constant rate, HTTP/1.1 keep-alive): a second generator
    with a much lower floor than the Python one (it times from the actual send)."""
    import base64

    targets = workdir / f"vegeta-{abs(hash(url))}.jsonl"
    targets.write_text("\n".join(json.dumps({"method": "POST", "url": url, "body": base64.b64encode(b).decode(),
                                             "header": {"Content-Type": ["application/json"]}}) for b in bodies) + "\n")
    attack = [vegeta, "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/s", f"-root-certs={ca}",
              "-http2=false", "-keepalive=true", "-timeout=10s", "-max-workers=1024", "-max-connections=1024"]
    subprocess.run([*attack, "-duration=1s"], capture_output=True, timeout=30, check=True)  # warm-up
    results = subprocess.run([*attack, f"-duration={duration:g}s"], capture_output=True, timeout=duration + 60, check=True).stdout
    report = json.loads(subprocess.run([vegeta, "report", "-type=json"], input=results, capture_output=True, timeout=60, check=True).stdout)
    lat = report["latencies"]
    return {"achieved": report["throughput"], "p50": lat["50th"] / 1e6, "p99": lat["99th"] / 1e6,
            "errors": sum(n for code, n in report["status_codes"].items() if code != "200")}


async def storm(url: str, bodies: list[bytes], ca: Path) -> dict[str, float]:
    """A class starting at 9:00: every (distinct, never seen) review sent at once."""
    ctx = ssl.create_default_context(cafile=str(ca))
    latencies: list[float] = []
    denied_deadline = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=256), timeout=aiohttp.ClientTimeout(total=30)) as session:
        start = time.perf_counter()

        async def one(body: bytes) -> None:
            nonlocal denied_deadline
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text()
            latencies.append((time.perf_counter() - start) * 1000)
            if "policy-engine-unavailable" in text:
                denied_deadline += 1

        await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"n": len(bodies), "seconds": elapsed, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "deadline_denials": denied_deadline}


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
    parser.add_argument("--users", type=int, default=200, help="distinct users (reviews) in the stream")
    parser.add_argument("--workers", type=int, default=2, help="webhook worker processes")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if shutil.which("wrk") is None:
        print("bench/admission.py needs wrk (Debian package 'wrk')", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="jg-bench-admission-"))
    certs = write_webhook_certs(work / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    print(f"building the stream: {args.users} users (KubeSpawner make_pod) ...", flush=True)
    stream = asyncio.run(build_stream(args.users))
    stream_file = work / "reviews.jsonl"
    stream_file.write_text("\n".join(json.dumps(r, separators=(",", ":")) for r in stream) + "\n")
    bodies = [json.dumps(r, separators=(",", ":")).encode() for r in stream]
    size = sum(len(b) for b in bodies) / len(bodies)
    print(f"stream: {len(stream)} reviews, mean {size / 1024:.1f} KiB each")

    peer_proc, peer_url = start_peer_opa(work, certs)
    backend = ManagedOpa(DEFAULT_POLICY_DIR).start()
    ours_proc, ours_base = start_webhook(work, certs, backend.url, workers=args.workers, cache=True)
    results: dict[str, Any] = {}
    try:
        # Cold: a spawn storm of distinct pods (the cache cannot help; OPA does the work).
        storm_bodies = [json.dumps(admission_review(r["request"]["object"], username=HUB_SA, uid=f"storm-{i}")).encode()
                        for i, r in enumerate(stream)]
        print(f"\nspawn storm: {len(storm_bodies)} distinct reviews sent at once, cold cache (latency from the storm's start)")
        for name, url in (("opa", peer_url), ("ours", ours_base + "/mutate")):
            r = asyncio.run(storm(url, storm_bodies, certs.ca_cert))
            print(f"  {name:<6} all answered in {r['seconds']:.2f} s, p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, "
                  f"deadline denials {r['deadline_denials']}")
        bad, n = agreement(stream, peer_url, ours_base, certs.ca_cert)
        print(f"agreement: {n - bad}/{n} reviews decided alike by bare OPA and jovial-guard ({bad} differ)")
        targets = {"opa": peer_url, "ours": ours_base + "/mutate", "ours-validate": ours_base + "/validate"}
        print("\nclosed loop (wrk, HTTPS keep-alive)")
        print(f"  {'target':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for conns in CONNECTIONS:
            for name, url in targets.items():
                if name == "ours-validate" and conns != 16:
                    continue
                wait_idle([peer_proc.pid, backend.pid or 0, *_tree(ours_proc.pid)])
                wrk(url, stream_file, connections=conns, duration=1.0)  # warm-up
                r = wrk(url, stream_file, connections=conns, duration=args.duration)
                results[(name, conns)] = r
                print(f"  {name:<14}{conns:>6}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}")
            ratio = results[("ours", conns)]["rps"] / results[("opa", conns)]["rps"]
            print(f"  ratio ours/opa at {conns} connections: {ratio:.2f}")

        print("\nopen loop (asyncio generator, latency from scheduled send time)")
        print(f"  {'target':<14}{'rate':>6}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        servers = [peer_proc.pid, backend.pid or 0, *_tree(ours_proc.pid)]
        for rate in RATES:
            for name in ("ours", "opa"):
                wait_idle(servers)
                r = asyncio.run(open_loop(targets[name], bodies, certs.ca_cert, rate=rate, duration=args.duration))
                results[(name, f"rate{rate}")] = r
                print(f"  {name:<14}{rate:>6}{r['achieved']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}")

        vegeta = find_vegeta()
        if vegeta:
            print("\nopen loop (vegeta, constant rate; latency from the actual send)")
            print(f"  {'target':<14}{'rate':>6}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
            for rate in RATES:
                for name in ("ours", "opa"):
                    wait_idle(servers)
                    r = vegeta_open_loop(vegeta, targets[name], bodies, certs.ca_cert, work, rate=rate, duration=args.duration)
                    results[(name, f"vegeta{rate}")] = r
                    print(f"  {name:<14}{rate:>6}{r['achieved']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8}")
        else:
            print("\n(vegeta not built: scripts/setup.d/55-vegeta.sh; only the Python generator ran)")

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
        nocache_proc, nocache_base = start_webhook(work, certs, backend.url, workers=args.workers, cache=False)
        try:
            wait_idle([peer_proc.pid, backend.pid or 0, *_tree(nocache_proc.pid)])
            wrk(nocache_base + "/mutate", stream_file, connections=16, duration=1.0)
            r = wrk(nocache_base + "/mutate", stream_file, connections=16, duration=args.duration)
            print(f"\nwithout the decision cache: /mutate at 16 connections {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")
        finally:
            stop(nocache_proc)
    finally:
        stop(ours_proc)
        stop(peer_proc)
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)

    rps16 = results[("ours", 16)]["rps"]
    opa16 = results[("opa", 16)]["rps"]
    p99 = results[("ours", "rate500")]["p99"]
    print(f"targets: p99 <= 10 ms at 500 req/s: {'met' if p99 <= 10 else 'MISSED'}; "
          f"rps16 >= 0.8x bare OPA: {'met' if rps16 >= 0.8 * opa16 else 'MISSED'}")
    print(f"admission: rate=500 p99_ms={p99:.2f} rps16={rps16:.0f} opa_rps16={opa16:.0f} ratio={rps16 / opa16:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
