"""The cost of live attestation on the embedded hub: CPU per server per minute, and the
latency from a drift to its alert.

One run, one hub (the repository's ``jupyterhub_config.py``), ``--servers`` running servers:

* cost: the audit service's attestation pass (``AttestationLoop.attest_all``: find each
  container through the engine, read every process from ``/proc``, the mounts, the cgroup
  limits, the ruleset digest inside the user's namespace, compare, commit the events),
  run in this process over the hub's own spawn registry; CPU of this process and its ``nft``
  children. Baseline in the same run: the bare ``/proc`` reads of the same processes
  (``procfs.read_security`` of every process in each container), what any attestation
  must at least do.
* latency: ``--samples`` times, at a random moment of the hub's loop period, flush one
  server's namespace ruleset from the host and time the ``attestation drift`` record in the
  hub's audit log (the response then cuts and stops that server; it is started again).

    nice python bench/attest.py [--servers 3] [--samples 5] [--interval 5]

Last line: ``attest: cpu_ms_per_server_minute=X baseline_ms=Y latency_mean_s=Z latency_max_s=W``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from spawn import _api, _free_pool, cleanup, spawn_to_ready  # noqa: E402

from jovial_guard.audit.attest_loop import AttestationLoop, docker_locator  # noqa: E402
from jovial_guard.audit.checkpoint import load_or_create_key  # noqa: E402
from jovial_guard.audit.query import Query, run_query  # noqa: E402
from jovial_guard.audit.registry import SpawnRegistry  # noqa: E402
from jovial_guard.audit.service import AuditService  # noqa: E402
from jovial_guard.runtime import procfs  # noqa: E402
from jovial_guard.spawn.stack import EmbeddedStack, StackSettings, temp_state_dir  # noqa: E402


def cpu_seconds() -> float:
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def per_pass(fn: Callable[[], object], passes: int) -> float:
    fn()  # warm
    before = cpu_seconds()
    for _ in range(passes):
        fn()
    return (cpu_seconds() - before) / passes


async def cost(state: Path, audit_dir: Path, engine: object, passes: int) -> tuple[float, float, int]:
    registry = SpawnRegistry(audit_dir / "spawns.sqlite")
    service = AuditService(state / "bench-audit", key=load_or_create_key(state / "bench-audit.key"))
    await service.start()
    loop = AttestationLoop(service, registry, locate=docker_locator(engine), interval=1)
    servers = len(await loop.attest_all())
    pids = [p for owner in registry.running_servers() if (where := loop.locate(owner)) is not None
            for p in procfs.processes_sharing(where.pid)]

    def bare() -> None:
        for pid in pids:
            procfs.read_security(pid)

    before = cpu_seconds()
    for _ in range(passes):
        await loop.attest_all()
    loop_cpu = (cpu_seconds() - before) / passes
    bare_cpu = per_pass(bare, passes)
    await service.close()
    registry.close()
    return loop_cpu, bare_cpu, servers


def ts(record: dict[str, object]) -> float:
    return _dt.datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def drift_latency(audit_dir: Path, namespace: str, user: str, timeout: float) -> float:
    caused = time.time()
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "flush", "ruleset"], check=True, timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in run_query(audit_dir, Query(user=user, kind="attestation", rule="attestation drift")):
            if ts(record) >= caused - 0.5:
                return ts(record) - caused
        time.sleep(0.05)
    raise RuntimeError(f"no attestation drift for {user} within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=3, help="running servers during the cost passes")
    parser.add_argument("--passes", type=int, default=20, help="attestation passes measured")
    parser.add_argument("--samples", type=int, default=5, help="drift-to-alert samples")
    parser.add_argument("--interval", type=float, default=5.0, help="the hub's attestation period (s)")
    args = parser.parse_args()

    tag = secrets.token_hex(2)
    name_prefix, netns_prefix, pool = f"jgbench{tag}", f"jb{tag}", _free_pool()
    state = temp_state_dir("jovial-guard-bench-attest-")
    settings = StackSettings.ephemeral(
        state / "hub", netns_prefix=netns_prefix, egress_pool=pool, engine_socket=state / "podman.sock",
        extra_env={"JOVIAL_GUARD_NAME_PREFIX": name_prefix,
                   "JOVIAL_GUARD_HOME_VOLUME": name_prefix + "-home-{username}",
                   "JOVIAL_GUARD_ATTEST_INTERVAL": str(args.interval)},
    )
    stack = EmbeddedStack(settings, progress=lambda m: print(f"  {m}", flush=True))
    audit_dir = settings.state_dir / "audit"
    token = settings.api_token or ""
    try:
        stack.start()
        users = [f"attest{i}" for i in range(args.servers)]
        for user in users:
            spawn_to_ready(settings.url, token, user)
        print(f"cost: {args.passes} passes over {args.servers} servers", flush=True)
        loop_cpu, bare_cpu, servers = asyncio.run(cost(state, audit_dir, stack.podman.docker_client(),  # type: ignore[union-attr]
                                                       args.passes))
        latencies = []
        for i in range(args.samples):
            user = users[i % len(users)]
            time.sleep(random.uniform(0, args.interval))
            latencies.append(drift_latency(audit_dir, stack.egress.namespace_of(user), user, 3 * args.interval + 10))
            print(f"  drift {i + 1}: alert after {latencies[-1]:.2f} s", flush=True)
            deadline = time.monotonic() + 60  # the response stops the server: start it again
            while _api(settings.url, token, "GET", f"/users/{user}").json().get("servers") and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
            spawn_to_ready(settings.url, token, user)
    finally:
        stack.stop()
        cleanup(name_prefix, netns_prefix, pool)
        shutil.rmtree(state, ignore_errors=True)

    scale = 60 / args.interval / max(servers, 1) * 1000
    print(f"attestation pass: {loop_cpu * 1000:.1f} ms CPU over {servers} servers "
          f"(bare /proc reads of the same processes: {bare_cpu * 1000:.2f} ms)")
    print(f"per server per minute at a {args.interval:g} s period: {loop_cpu * scale:.0f} ms CPU "
          f"({loop_cpu * scale / 600:.2f}% of one core); bare reads {bare_cpu * scale:.1f} ms")
    print(f"drift to alert: mean {statistics.mean(latencies):.2f} s, max {max(latencies):.2f} s "
          f"over {len(latencies)} flushes (period {args.interval:g} s)")
    print(f"attest: cpu_ms_per_server_minute={loop_cpu * scale:.0f} baseline_ms={bare_cpu * scale:.1f} "
          f"latency_mean_s={statistics.mean(latencies):.2f} latency_max_s={max(latencies):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
