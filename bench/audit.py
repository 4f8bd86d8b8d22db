"""Benchmark: audit intake with the shipped durability (an acknowledged event is on disk),
and verification of a one-million-record log.

Rows, all measured in this run on this machine:

* fsync baseline: one record appended + fdatasync per event (what one-ack-per-sync gives);
* http baseline: an aiohttp server (uvloop, like the service) that parses the alert and
  acks without writing, under the same wrk load (the ceiling of the HTTP stack here);
* http: Falco's way, one alert per POST with keep-alive, ``--connections`` concurrent
  connections (wrk), against ``jovial-guard audit serve`` (group commit, fdatasync);
* bulk: NDJSON batches to /bulk (one group commit per batch), several concurrent posts;
* verify: the log the runs above wrote must verify; then a log of exactly ``--records``
  (1,000,000) records made of those intake bodies, checkpointed as the service does, is
  verified with ``verify_log`` (one hashing process per CPU).

Each row runs ``--repeat`` times (baseline, http and bulk interleaved in each round); every
round is printed with the server's CPU per event and the load average, and the last line
takes the best round (the machine is shared, so interference only ever makes rounds slower).

Last line: ``audit: http_per_s=X bulk_per_s=Y verify_1m_s=Z``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jovial_guard.audit.checkpoint import load_or_create_key, load_public_key
from jovial_guard.audit.log import AuditLog, iter_bodies
from jovial_guard.audit.registry import SpawnRegistry
from jovial_guard.audit.verify import verify_log

VECTORS = REPO / "tests" / "vectors" / "audit"
ACCEPTED = [f"falco/{n}.json" for n in ("terminal_shell", "read_sensitive_file", "drop_and_execute",
                                        "contact_k8s_api", "fileless_memfd", "reverse_shell")]
ACCEPTED += ["falcosidekick/webhook.json", "engine/api_oom.json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert_bytes(name: str) -> bytes:
    return orjson.dumps(orjson.loads((VECTORS / name).read_bytes()))


def serve_baseline(port: int) -> None:
    """Parse and ack without writing (same aiohttp, same JSON library)."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        if not isinstance(doc, dict):
            return web.Response(status=400)
        return web.Response(body=b'{"seq":0}', content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/falco", handler)
    app.router.add_get("/healthz", healthz)
    try:
        import uvloop  # the audit service runs on uvloop too: same stack on both rows
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024, loop=loop)


async def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, body_file: Path, *, seconds: int, connections: int, workdir: Path) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx) from wrk posting body_file on keep-alive connections."""
    lua = workdir / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*all"); f:close()\n'
    )
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if errors:
        print(f"  wrk: {errors.group(0)}")
    return rate, total, int(bad.group(1)) if bad else 0


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """user+system CPU of a process and (``children``) its live children (the bulk workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir() if children else ():
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def fsync_baseline(directory: Path, seconds: float = 2.0) -> float:
    record = b"x" * 1300 + b"\n"
    fd = os.open(directory / "fsync-baseline.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        os.write(fd, record)
        os.fdatasync(fd)
        n += 1
    elapsed = time.perf_counter() - started
    os.close(fd)
    return n / elapsed


async def bulk(url: str, *, seconds: float, batch: int, concurrency: int) -> tuple[float, int]:
    lines = [alert_bytes(n) for n in ACCEPTED]
    payload = b"\n".join(lines[i % len(lines)] for i in range(batch)) + b"\n"
    accepted = 0
    stop_at = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while time.perf_counter() < stop_at:
            async with session.post(url + "/bulk", data=payload) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"bulk answered {resp.status}: {await resp.text()}")
                accepted += (await resp.json())["accepted"]

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted / (time.perf_counter() - started), accepted


def build_verify_log(source: Path, directory: Path, records: int) -> None:
    """A log of exactly ``records`` records, made of bodies the intake runs wrote (cycled),
    written by AuditLog with the service's checkpoint settings."""
    key = load_or_create_key(directory / "keys" / "signing.key")
    samples = [body for _, (_, body) in zip(range(20_000), iter_bodies(source))]
    log = AuditLog(directory, key=key)
    log.open()
    while log.size < records:
        n = min(20_000, records - log.size)
        start = log.size % len(samples)
        log.append_many([samples[(start + i) % len(samples)] for i in range(n)])
    log.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--bulk-batch", type=int, default=2000)
    parser.add_argument("--bulk-concurrency", type=int, default=4)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds (baseline, http, bulk interleaved; verify repeated); the best is reported")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    parser.add_argument("--serve-baseline", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run scripts/install-system.sh")
    work = args.dir or Path(tempfile.mkdtemp(prefix="jg-audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log_dir = work / "audit"
    alert_file = work / "alert.json"
    alert_file.write_bytes(alert_bytes("falco/terminal_shell.json"))
    cpus = os.cpu_count() or 1
    try:
        print(f"audit benchmark in {work} ({cpus} CPUs, {args.seconds}s per run, {args.repeat} rounds; "
              "other work on this machine shares the CPUs and the disk, so rounds vary)")
        print(f"  fsync baseline (1 record + fdatasync per event): {fsync_baseline(work):,.0f}/s")

        registry = SpawnRegistry(log_dir / "spawns.sqlite")
        registry.register(user="alice", server="", container_id="3f2a1b4c5d6e" + "7f8091a2b3c4" * 4 + "5d6e7f81",
                          container_name="jupyter-alice")
        registry.register(user="bob", server="gpu", container_name="jupyter-bob-gpu")
        registry.close()
        base_port, port = free_port(), free_port()
        base_url, url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{port}"
        base = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(base_port)])
        server = subprocess.Popen([sys.executable, "-m", "jovial_guard.cli", "audit", "serve", "--dir", str(log_dir),
                                   "--listen", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.DEVNULL)
        http_rates, bulk_rates, acked = [], [], 0
        try:
            await wait_healthy(base_url)
            await wait_healthy(url)
            for round_ in range(1, args.repeat + 1):
                cpu0 = cpu_seconds(base.pid)
                base_rate, base_total, _ = wrk(base_url + "/falco", alert_file, seconds=args.seconds,
                                               connections=args.connections, workdir=work)
                base_cpu = (cpu_seconds(base.pid) - cpu0) / max(base_total, 1) * 1e6

                cpu0 = cpu_seconds(server.pid)
                http_rate, http_total, non2xx = wrk(url + "/falco", alert_file, seconds=args.seconds,
                                                   connections=args.connections, workdir=work)
                if non2xx:
                    raise SystemExit(f"http run: {non2xx} requests were not acknowledged")
                cpu1 = cpu_seconds(server.pid)
                main1 = cpu_seconds(server.pid, children=False)
                http_cpu = (cpu1 - cpu0) / max(http_total, 1) * 1e6

                bulk_rate, bulk_total = await bulk(url, seconds=args.seconds, batch=args.bulk_batch,
                                                   concurrency=args.bulk_concurrency)
                bulk_cpu = (cpu_seconds(server.pid) - cpu1) / max(bulk_total, 1) * 1e6
                main_cpu = (cpu_seconds(server.pid, children=False) - main1) / max(bulk_total, 1) * 1e6
                acked += http_total + bulk_total
                http_rates.append(http_rate)
                bulk_rates.append(bulk_rate)
                print(f"  round {round_} (load average {os.getloadavg()[0]:.1f} on {cpus} CPUs):")
                print(f"    http baseline (same aiohttp + uvloop, parse + ack, no write), {args.connections} "
                      f"connections: {base_rate:,.0f}/s, server CPU {base_cpu:.0f} us/alert")
                print(f"    http (one alert per POST, ack = on disk), {args.connections} connections: "
                      f"{http_rate:,.0f}/s, server CPU {http_cpu:.0f} us/alert")
                print(f"    bulk (NDJSON x{args.bulk_batch}, {args.bulk_concurrency} concurrent, group commit): "
                      f"{bulk_rate:,.0f} events/s, server CPU {bulk_cpu:.1f} us/event (intake process "
                      f"{main_cpu:.1f}) = {1e6 / bulk_cpu * cpus:,.0f} events/s if all {cpus} CPUs were ours")
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/healthz") as resp:
                    records_after = (await resp.json())["records"]
            if records_after < acked:
                raise SystemExit(f"log has {records_after} records, fewer than the {acked} acknowledged")
        finally:
            base.send_signal(signal.SIGINT)
            server.send_signal(signal.SIGTERM)
            base.wait(timeout=30)
            server.wait(timeout=60)

        intake_report = verify_log(log_dir, load_public_key(log_dir / "keys" / "signing.pub"))
        print(f"  the intake runs' own log verifies: {intake_report.records:,} records, "
              f"{intake_report.checkpoints} signed checkpoints")
        verify_dir = work / "verify"
        build_verify_log(log_dir, verify_dir, args.records)
        mib = sum(p.stat().st_size for p in verify_dir.glob("audit-*.log")) / 2**20
        key = load_public_key(verify_dir / "keys" / "signing.pub")
        verify_times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = verify_log(verify_dir, key)
            verify_times.append(time.perf_counter() - started)
            if report.records != args.records or report.unsigned_tail:
                raise SystemExit(f"verified {report.records} records ({report.unsigned_tail} unsigned), "
                                 f"expected {args.records} all signed")
        print(f"  verify: {report.records:,} records of intake bodies ({mib:,.0f} MiB, {report.files} files, "
              f"{report.checkpoints} signed checkpoints): " + ", ".join(f"{t:.2f}s" for t in verify_times))
        print(f"  best of {args.repeat}: http {max(http_rates):,.0f}/s, bulk {max(bulk_rates):,.0f}/s, "
              f"verify {min(verify_times):.2f}s for {report.records:,} records")
        print(f"audit: http_per_s={max(http_rates):.0f} bulk_per_s={max(bulk_rates):.0f} "
              f"verify_1m_s={min(verify_times):.2f}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "--serve-baseline" in sys.argv:
        serve_baseline(int(sys.argv[sys.argv.index("--serve-baseline") + 1]))
    else:
        asyncio.run(main())
