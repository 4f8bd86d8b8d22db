"""Benchmark: audit intake with the shipped durability (an acknowledged event is on disk),
and verification of a one-million-record log.

Rows, all measured in this run on this machine:

* fsync baseline: one record appended + fdatasync per event (what one-ack-per-sync gives);
* http baseline: an aiohttp server (uvloop, like the service) that parses the alert and
  acks without writing, under the same wrk load (the ceiling of the HTTP stack here);
* http: Falco's way, one alert per POST with keep-alive, ``--connections`` concurrent
  connections (wrk), against ``jovial-guard audit serve`` (group commit, fdatasync);
* bulk: NDJSON batches to /bulk (one group commit per batch), several concurrent posts;
* verify: ``verify_log`` over the log the runs above wrote, topped up to ``--records``
  records (1,000,000) with the same kind of records, signed checkpoints included.

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


def top_up(directory: Path, records: int) -> int:
    """Append realistic records (copies of what intake wrote) until the log has ``records``."""
    key = load_or_create_key(directory / "keys" / "signing.key")
    log = AuditLog(directory, key=key)
    log.open()
    samples = [body for _, (_, body) in zip(range(64), iter_bodies(directory))][-32:]
    while log.size < records:
        n = min(20_000, records - log.size)
        log.append_many([samples[i % len(samples)] for i in range(n)])
    size = log.size
    log.close()
    return size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--bulk-batch", type=int, default=2000)
    parser.add_argument("--bulk-concurrency", type=int, default=4)
    parser.add_argument("--records", type=int, default=1_000_000)
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
    try:
        print(f"audit benchmark in {work} ({os.cpu_count()} CPUs, {args.seconds}s per run)")
        fsync_rate = fsync_baseline(work)
        print(f"  fsync baseline (1 record + fdatasync per event): {fsync_rate:,.0f}/s")

        port = free_port()
        base = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port)])
        try:
            await wait_healthy(f"http://127.0.0.1:{port}")
            base_cpu0 = cpu_seconds(base.pid)
            base_rate, base_total, _ = wrk(f"http://127.0.0.1:{port}/falco", alert_file, seconds=args.seconds,
                                           connections=args.connections, workdir=work)
            base_cpu_us = (cpu_seconds(base.pid) - base_cpu0) / max(base_total, 1) * 1e6
        finally:
            base.send_signal(signal.SIGINT)
            base.wait(timeout=30)
        print(f"  http baseline (parse + ack, no write), {args.connections} connections: {base_rate:,.0f}/s")
        print(f"    server CPU per alert: {base_cpu_us:.0f} us")

        registry = SpawnRegistry(log_dir / "spawns.sqlite")
        registry.register(user="alice", server="", container_id="3f2a1b4c5d6e" + "7f8091a2b3c4" * 4 + "5d6e7f81",
                          container_name="jupyter-alice")
        registry.register(user="bob", server="gpu", container_name="jupyter-bob-gpu")
        registry.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "jovial_guard.cli", "audit", "serve", "--dir", str(log_dir),
                                   "--listen", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            await wait_healthy(url)
            cpu0 = cpu_seconds(server.pid)
            http_rate, http_total, non2xx = wrk(url + "/falco", alert_file, seconds=args.seconds,
                                               connections=args.connections, workdir=work)
            if non2xx:
                raise SystemExit(f"http run: {non2xx} requests were not acknowledged")
            print(f"  http (one alert per POST, ack = on disk), {args.connections} connections: {http_rate:,.0f}/s "
                  f"({http_total:,} alerts)")
            cpu1 = cpu_seconds(server.pid)
            main1 = cpu_seconds(server.pid, children=False)
            http_cpu_us = (cpu1 - cpu0) / max(http_total, 1) * 1e6
            print(f"    server CPU per alert: {http_cpu_us:.0f} us")
            bulk_rate, bulk_total = await bulk(url, seconds=args.seconds, batch=args.bulk_batch,
                                               concurrency=args.bulk_concurrency)
            bulk_cpu_us = (cpu_seconds(server.pid) - cpu1) / max(bulk_total, 1) * 1e6
            main_cpu_us = (cpu_seconds(server.pid, children=False) - main1) / max(bulk_total, 1) * 1e6
            print(f"  bulk (NDJSON x{args.bulk_batch}, {args.bulk_concurrency} concurrent, group commit): "
                  f"{bulk_rate:,.0f} events/s ({bulk_total:,} events)")
            print(f"    server CPU per event (intake process + bulk workers): {bulk_cpu_us:.1f} us "
                  f"(intake process {main_cpu_us:.1f} us) "
                  f"= {1e6 / bulk_cpu_us * (os.cpu_count() or 1):,.0f} events/s if all {os.cpu_count()} CPUs were ours")
            load = os.getloadavg()[0]
            print(f"    load average during the run: {load:.1f} on {os.cpu_count()} CPUs (other work shares them)")
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/healthz") as resp:
                    records_after = (await resp.json())["records"]
            if records_after < http_total + bulk_total:
                raise SystemExit(f"log has {records_after} records, fewer than the {http_total + bulk_total} acknowledged")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

        size = top_up(log_dir, args.records)
        mib = sum(p.stat().st_size for p in log_dir.glob("audit-*.log")) / 2**20
        started = time.perf_counter()
        report = verify_log(log_dir, load_public_key(log_dir / "keys" / "signing.pub"))
        verify_s = time.perf_counter() - started
        if report.records != size:
            raise SystemExit(f"verified {report.records} records, expected {size}")
        print(f"  verify: {report.records:,} records ({mib:,.0f} MiB, {report.files} files, "
              f"{report.checkpoints} signed checkpoints) in {verify_s:.2f}s "
              f"({report.records / verify_s:,.0f} records/s)")
        scale = 1_000_000 / report.records
        print(f"audit: http_per_s={http_rate:.0f} bulk_per_s={bulk_rate:.0f} verify_1m_s={verify_s * scale:.2f}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "--serve-baseline" in sys.argv:
        serve_baseline(int(sys.argv[sys.argv.index("--serve-baseline") + 1]))
    else:
        asyncio.run(main())
