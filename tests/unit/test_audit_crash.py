"""Crash safety with real processes: SIGKILL the writer while it appends; everything it
acknowledged is on disk, a torn tail is recovered, and the log verifies afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

from jovial_guard.audit.checkpoint import load_or_create_key, load_public_key
from jovial_guard.audit.log import AuditLog, iter_bodies
from jovial_guard.audit.verify import verify_log

REPO = Path(__file__).resolve().parents[2]
ALERT = orjson.loads((REPO / "tests/vectors/audit/falco/terminal_shell.json").read_bytes())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(directory: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jovial_guard.cli", "audit", "serve", "--dir", str(directory),
         "--listen", f"127.0.0.1:{port}", "--checkpoint-interval", "0.1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"audit serve exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("audit serve did not become healthy")


async def test_sigkill_during_http_intake_loses_nothing_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(directory, port)
    acked: dict[int, str] = {}
    try:
        await wait_healthy(url, proc)

        async def sender(session: aiohttp.ClientSession) -> None:
            while True:
                alert_id = str(uuid.uuid4())
                try:
                    async with session.post(f"{url}/falco", json={**ALERT, "uuid": alert_id}) as resp:
                        if resp.status == 200:
                            acked[(await resp.json())["seq"]] = alert_id
                except (TimeoutError, aiohttp.ClientError, ConnectionError):
                    return

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tasks = [asyncio.create_task(sender(session)) for _ in range(16)]
            deadline = time.monotonic() + 20
            while len(acked) < 400 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert len(acked) >= 400

    key = load_or_create_key(directory / "keys" / "signing.key")
    log = AuditLog(directory, key=key)
    report = log.open()
    on_disk = {seq: (orjson.loads(b).get("alert") or {}).get("uuid") for seq, b in iter_bodies(directory)}
    log.close()
    missing = [seq for seq, alert_id in acked.items() if on_disk.get(seq) != alert_id]
    assert not missing, f"acknowledged but lost: {missing[:10]}"
    assert report.size >= max(acked)
    assert verify_log(directory, load_public_key(directory / "keys" / "signing.pub"), workers=1).records == log.size

    # The service starts again on the same log and continues the chain.
    proc = start_server(directory, port)
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/falco", json=ALERT) as resp:
                assert resp.status == 200
                assert (await resp.json())["seq"] > max(acked)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert verify_log(directory, load_public_key(directory / "keys" / "signing.pub"), workers=1).unsigned_tail == 0


WRITER = r"""
import sys, orjson
from pathlib import Path
from jovial_guard.audit.checkpoint import load_or_create_key
from jovial_guard.audit.log import AuditLog
d = Path(sys.argv[1])
log = AuditLog(d, key=load_or_create_key(d / "signing.key"), checkpoint_every=5000, max_file_bytes=16 << 20)
report = log.open()
print("open", report.size, report.torn_bytes, flush=True)
pad = "x" * 1500
n = 0
while True:
    batch = [orjson.dumps({"kind": "bulk", "n": n + i, "pad": pad}) for i in range(600)]
    first = log.append_many(batch)
    n += len(batch)
    print("acked", first + len(batch) - 1, flush=True)
"""


def test_sigkill_mid_append_recovers_torn_tail_and_keeps_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    last_acked = 0
    torn_seen = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        opened = proc.stdout.readline().split()
        assert opened[0] == "open", proc.stderr.read() if proc.stderr else ""
        size, torn = int(opened[1]), int(opened[2])
        assert size >= last_acked  # nothing acknowledged was lost by the previous kill
        torn_seen += torn > 0
        for _ in range(3 + round_):
            line = proc.stdout.readline().split()
            assert line and line[0] == "acked"
            last_acked = int(line[1])
        time.sleep(0.003 * round_)  # land the kill at different points of the next append
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().split("\n"):  # acks printed before the kill landed
            if line.startswith("acked"):
                last_acked = int(line.split()[1])
    key = load_or_create_key(directory / "signing.key")
    log = AuditLog(directory, key=key)
    report = log.open()
    assert report.size >= last_acked
    seqs = [seq for seq, _ in iter_bodies(directory)]
    assert seqs == list(range(1, report.size + 1))
    log.close()
    assert verify_log(directory, key.public_key()).records == report.size
    # Whether a kill lands inside write() is timing; recovery of a torn tail is asserted
    # deterministically in test_audit_log.py. Report what happened here.
    print(f"torn tails recovered across kills: {torn_seen + (report.torn_bytes > 0)}")
