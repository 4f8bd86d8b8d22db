#!/usr/bin/env python3
"""Benchmark: what a refused syscall costs when the seccomp agent answers and records it.

Baseline measured in the same run: the same process and the same refused syscall
(``sched_yield``) answered EPERM by the filter itself (``SCMP_ACT_ERRNO``), which is what a
profile without the agent does. The measured path: ``SCMP_ACT_NOTIFY`` with the
descriptor handed to a real :class:`~jovial_guard.audit.seccomp_agent.SeccompAgent` in a
running audit service (temporary log), which answers EPERM and counts the repeats into
audit records. Needs root (the filter is loaded with libseccomp, as runc does).

Run as ``python bench/seccomp_agent.py [--calls 20000]``; the last line is
``seccomp_agent: errno_us=X agent_us=Y ratio=Z records=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jovial_guard.audit.query import Query, run_query  # noqa: E402
from jovial_guard.audit.runner import AuditSettings, RunningAudit  # noqa: E402
from jovial_guard.audit.seccomp_agent import RULE  # noqa: E402

CONTAINER = "b" * 64
CHILD = r"""
import array, ctypes, json, os, socket, sys, time
action, calls, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)
code = 0x7FC00000 if action == "notify" else 0x00050000 | 1  # NOTIFY, or ERRNO(EPERM)
assert lib.seccomp_rule_add(ctx, code, 24, 0) == 0
assert lib.seccomp_load(ctx) == 0
if action == "notify":
    fd = lib.seccomp_notify_fd(ctx)
    state = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": os.getpid(), "metadata": "bench",
             "state": {"id": sys.argv[4], "status": "creating", "pid": os.getpid()}}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendmsg([json.dumps(state).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    os.close(fd)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(24)
start = time.perf_counter()
for _ in range(calls):
    libc.syscall(24)
elapsed = time.perf_counter() - start
print(json.dumps({"us": elapsed / calls * 1e6, "errno": ctypes.get_errno()}))
"""


def child(action: str, calls: int, socket_path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, action, str(calls), str(socket_path), CONTAINER],
                         capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    if result["errno"] != 1:
        raise SystemExit(f"{action}: the refused call did not answer EPERM: {result}")
    return result


async def run(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="jg-bench-seccomp-") as tmp:
        socket_path = Path(tmp) / "agent.sock"
        audit = await RunningAudit(AuditSettings(directory=Path(tmp) / "audit", port=0, bulk_workers=0,
                                                 seccomp_socket=socket_path)).start()
        try:
            errno_run = await asyncio.to_thread(child, "errno", calls, socket_path)
            agent_run = await asyncio.to_thread(child, "notify", calls, socket_path)
        finally:
            await audit.stop()
        records = list(run_query(Path(tmp) / "audit", Query(rule=RULE)))
        counted = sum(r["fields"]["count"] for r in records)
    print(f"refused sched_yield x{calls}: filter ERRNO {errno_run['us']:.2f} us/call; "
          f"through the agent {agent_run['us']:.2f} us/call; {len(records)} audit records "
          f"covering {counted} calls")
    ratio = agent_run["us"] / errno_run["us"] if errno_run["us"] else float("inf")
    print(f"seccomp_agent: errno_us={errno_run['us']:.2f} agent_us={agent_run['us']:.2f} "
          f"ratio={ratio:.0f} records={len(records)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000, help="refused calls per run (default 20000)")
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(run(args.calls))
    print(f"(took {time.monotonic() - started:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
