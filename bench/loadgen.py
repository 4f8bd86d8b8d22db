"""Load generators for the admission benchmark: wrk (closed loop), an asyncio open loop,
vegeta (open loop), a burst ("storm"), and a wait for the servers to go idle in between.

Distinct workloads: every template carries the placeholder ``JGNONCE``; each generator
replaces it by a value never used before in this process, so every request describes a
workload no cache has seen. Everything is bounded in count and time and targets only the
loopback URLs it is given.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
#: Placeholder replaced by a value unique to each request in the distinct stream.
NONCE = "JGNONCE"

class Nonces:
    """Values never used before in this benchmark run (the servers' caches outlive one load
    run, so a later run must not repeat an earlier run's workloads)."""

    def __init__(self) -> None:
        self._run = 0

    def run_id(self) -> str:
        self._run += 1
        return f"r{os.getpid()}x{self._run}"

    def bodies(self, templates: list[bytes], count: int) -> list[bytes]:
        run = self.run_id().encode()
        slot = NONCE.encode()
        return [templates[i % len(templates)].replace(slot, run + b"-" + str(i).encode()) for i in range(count)]


NONCES = Nonces()

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, stream_file: Path, *, connections: int, duration: float, distinct: bool = True,
        servers: Sequence[int] = ()) -> dict[str, float]:
    """Closed loop: wrk with ``connections`` keep-alive HTTPS connections for ``duration`` s;
    ``distinct``: every request a workload never sent before, else the stream repeated.
    ``cpu_ms``: CPU time the ``servers`` processes spent per request (user + system), which
    on a shared machine says more than the rate alone."""
    threads = 1 if connections < 16 else 2
    ticks = _cpu_ticks(list(servers))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "--latency",
         "-s", str(REPO / "bench" / "wrk_reviews.lua"), url, "--", str(stream_file),
         "distinct" if distinct else "repeat", NONCES.run_id()],
        capture_output=True, text=True, timeout=duration + 30, check=True,
    ).stdout
    cpu_s = (_cpu_ticks(list(servers)) - ticks) / os.sysconf("SC_CLK_TCK")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if non2xx or errors:
        print(f"    wrk reported problems: {non2xx.group(0) if non2xx else ''} {errors.group(0) if errors else ''}")
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_ms": 1000 * cpu_s / max(requests, 1)}


async def open_loop(url: str, templates: list[bytes], ca: Path, *, rate: int, duration: float, distinct: bool = True) -> dict[str, float]:
    """Send at ``rate``/s for ``duration`` s; latency from each request's scheduled time."""
    total = int(rate * duration)
    bodies = NONCES.bodies(templates, total + 32) if distinct else templates
    ctx = ssl.create_default_context(cafile=str(ca))
    loop = asyncio.get_running_loop()

    def quiet_shutdown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # uvloop reports TLS transports torn down at session close; they are not errors here.
        exc = context.get("exception")
        if isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_shutdown)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(ssl=ctx, limit=512)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm the pool so TLS handshakes are not what we measure.
        warm = bodies[-32:] if distinct else bodies[:32]
        await asyncio.gather(*(session.post(url, data=b, headers={"Content-Type": "application/json"}) for b in warm))

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


def process_tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in out)]


def find_vegeta() -> str | None:
    """vegeta from scripts/setup.d/55-vegeta.sh, if built."""
    local = REPO / ".tools" / "bin" / "vegeta"
    return str(local) if os.access(local, os.X_OK) else shutil.which("vegeta")


def vegeta_open_loop(vegeta: str, url: str, templates: list[bytes], ca: Path, workdir: Path, *, rate: int, duration: float) -> dict[str, float]:
    """Open loop with vegeta (Go, constant rate, HTTP/1.1 keep-alive): a second generator
    with a much lower floor than the Python one (it times from the actual send). Distinct
    reviews: vegeta cycles through its targets, so there are as many as requests."""
    import base64

    def write_targets(bodies: list[bytes]) -> Path:
        targets = workdir / f"vegeta-{abs(hash(url))}.jsonl"
        targets.write_text("\n".join(json.dumps({"method": "POST", "url": url, "body": base64.b64encode(b).decode(),
                                                 "header": {"Content-Type": ["application/json"]}}) for b in bodies) + "\n")
        return targets

    def attack(targets: Path) -> list[str]:
        return [vegeta, "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/s", f"-root-certs={ca}",
                "-http2=false", "-keepalive=true", "-timeout=10s", "-max-workers=1024", "-max-connections=1024"]

    warm = write_targets(NONCES.bodies(templates, rate))
    subprocess.run([*attack(warm), "-duration=1s"], capture_output=True, timeout=30, check=True)  # warm-up
    targets = write_targets(NONCES.bodies(templates, int(rate * duration) + rate))
    results = subprocess.run([*attack(targets), f"-duration={duration:g}s"], capture_output=True, timeout=duration + 60, check=True).stdout
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
