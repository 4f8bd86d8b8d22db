"""Spawn storm: N users start their servers at once, on the hardened hub and on a plain one.

One run, same OPA, same podman service, same image (the set-up of bench/spawn.py):

* hardened: the repository's ``jupyterhub_config.py`` (pre-spawn hook, policy decision,
  egress namespace, hardening, audit and dashboard services);
* plain: the same config with the hook removed and a stock DockerSpawner on host
  networking (the baseline a hub without jovial_guard would run).

Each storm creates N users and sends every ``POST /hub/api/users/NAME/server`` at once
(one thread per user). The hardened hub lets 2 servers per core start at once and queues
the rest in its pre-spawn hook (``JovialGuard.start_slots``: in arrival order, each
waiting user's spawn page says how many are ahead); the plain hub uses JupyterHub's own
control sized the same way (``concurrent_spawn_limit``: the surplus gets 429). A 429 is
honoured as the hub asks: wait Retry-After, ask again; it is counted, not failed. One poller reads
``GET /hub/api/users`` twice a second: a server is ready when the hub says so, failed when
it vanished without becoming ready (or the storm's deadline passed). The hardened storm
runs first, its servers are stopped, then the plain storm; ``--side-by-side`` runs both at
once (each hub gets N users at once) so load from the rest of the machine falls on both
alike, at the price of twice the load.

Memory: RSS of the hub's process tree (hub, proxy, audit and dashboard services) before
the storm and with every server running, per user, on both hubs; the guard's own share
per user is the hardened hub's growth less the plain hub's (JupyterHub and the proxy
grow per user on both); and the notebook containers' own memory (podman stats).

    nice python bench/storm.py [--users 50] [--deadline 900]

Last line: ``storm: n=N ready=R failed=F all_ready_s=T plain_all_ready_s=P ratio=T/P
hook_p99_ms=H guard_mb_per_user=M`` (R, F, T, H, M for the hardened hub; H from the
hook's own timing in the hub log during the storm: the guard's work after the queue, i.e.
decision, namespace, storage grant, render and spawn listeners; the queue wait is
reported beside it; M the hardened hub tree's RSS growth per running server less the
plain hub's).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.spawn import PLAIN_CONFIG, _free_pool, cleanup, percentile, plain_limit  # noqa: E402
from jovial_guard.paths import HUB_STATE_ENV  # noqa: E402
from jovial_guard.runtime.podman import PodmanService  # noqa: E402
from jovial_guard.spawn.stack import EmbeddedStack, HubProcess, StackSettings, temp_state_dir  # noqa: E402


@dataclass
class StormResult:
    """What one storm did: per-user time to ready (s from the storm's start), failures."""

    ready: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    throttled: int = 0
    seconds: float = 0.0
    rss_before_mb: float = 0.0
    rss_ready_mb: float = 0.0
    container_mb: list[float] = field(default_factory=list)


def _api(url: str, token: str, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                            timeout=180, **kw)


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, in MB."""
    pids, frontier = {pid}, [pid]
    while frontier:
        out = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout.split()
        for child in (int(p) for p in out):
            if child not in pids:
                pids.add(child)
                frontier.append(child)
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def container_memory_mb(name_prefix: str) -> list[float]:
    """Memory use of each running container whose name starts with ``name_prefix``."""
    out = subprocess.run([*PodmanService().podman_args(), "stats", "--no-stream", "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    try:
        rows = json.loads(out or "[]")
    except json.JSONDecodeError:
        return []
    sizes = []
    for row in rows:
        if str(row.get("name", "")).startswith(name_prefix):
            match = re.match(r"([\d.]+)([kMG]?B)", str(row.get("mem_usage", "")))
            if match:
                sizes.append(float(match.group(1)) * {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[match.group(2)])
    return sizes


def storm(url: str, token: str, hub_pid: int, users: list[str], *, deadline: float, name_prefix: str) -> StormResult:
    result = StormResult()
    _api(url, token, "POST", "/users", json={"usernames": users}).raise_for_status()
    result.rss_before_mb = tree_rss_mb(hub_pid)
    accepted: set[str] = set()
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + deadline

    def request_server(user: str) -> None:
        while time.perf_counter() < stop_at:
            try:
                resp = _api(url, token, "POST", f"/users/{user}/server", json={"profile": "default"})
            except requests.RequestException as exc:
                with lock:
                    result.failed[user] = f"request failed: {exc}"
                return
            if resp.status_code == 429:
                with lock:
                    result.throttled += 1
                time.sleep(float(resp.headers.get("Retry-After") or 2))
                continue
            with lock:
                if resp.status_code in (201, 202):
                    accepted.add(user)
                else:
                    result.failed[user] = f"HTTP {resp.status_code}: {resp.text[:200]}"
            return
        with lock:
            result.failed.setdefault(user, "still throttled at the deadline")

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        for user in users:
            pool.submit(request_server, user)
        wanted = set(users)
        while time.perf_counter() < stop_at:
            try:
                listing = _api(url, token, "GET", "/users", params={"limit": 1000}).json()
            except requests.RequestException:
                time.sleep(0.5)  # a hub slow to answer its poller is measured by the spawns
                continue
            now = time.perf_counter() - start
            with lock:
                for info in listing:
                    name = info.get("name")
                    if name not in wanted or name in result.ready or name in result.failed:
                        continue
                    server = (info.get("servers") or {}).get("")
                    if server and server.get("ready"):
                        result.ready[name] = now
                    elif name in accepted and not server:
                        result.failed[name] = "the server stopped before it was ready (see the hub log)"
                if len(result.ready) + len(result.failed) == len(users):
                    break
            time.sleep(0.5)
    for user in users:
        if user not in result.ready:
            result.failed.setdefault(user, f"not ready within {deadline:.0f}s")
    result.seconds = time.perf_counter() - start
    time.sleep(2)  # let the services record the last spawns
    result.rss_ready_mb = tree_rss_mb(hub_pid)
    result.container_mb = container_memory_mb(name_prefix)
    return result


def stop_all(url: str, token: str, users: list[str], timeout: float = 600) -> None:
    """Stop the storm's servers so the next storm starts on an idle engine. On a loaded
    machine the hub may answer slowly: a slow answer is waited for, not fatal."""

    def stop_one(user: str) -> None:
        try:
            _api(url, token, "DELETE", f"/users/{user}/server")
        except requests.RequestException:
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(stop_one, users))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listing = _api(url, token, "GET", "/users", params={"limit": 1000}).json()
        except requests.RequestException:
            time.sleep(2)
            continue
        if not any(info.get("servers") for info in listing if info.get("name") in users):
            return
        time.sleep(2)
    print(f"  (servers of the last storm still stopping after {timeout:.0f}s)", flush=True)


def report(name: str, r: StormResult, n: int) -> None:
    times = sorted(r.ready.values())
    p50 = percentile(times, 50) if times else float("nan")
    p99 = percentile(times, 99) if times else float("nan")
    containers = (sum(r.container_mb) / len(r.container_mb)) if r.container_mb else float("nan")
    print(f"  {name:<9} ready {len(r.ready)}/{n}, failed {len(r.failed)}, 429s {r.throttled}, "
          f"all ready {max(times) if times else float('nan'):.1f} s, time to ready p50 {p50:.1f} s p99 {p99:.1f} s")
    print(f"  {'':<9} hub tree RSS {r.rss_before_mb:.0f} -> {r.rss_ready_mb:.0f} MB "
          f"({(r.rss_ready_mb - r.rss_before_mb) / max(len(r.ready), 1):.2f} MB per running server); "
          f"notebook container {containers:.0f} MB each (podman stats, n={len(r.container_mb)})")
    for user, why in sorted(r.failed.items())[:10]:
        print(f"  {'':<9} failed {user}: {why}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users starting at once")
    parser.add_argument("--deadline", type=float, default=900, help="seconds a storm may take")
    parser.add_argument("--side-by-side", action="store_true",
                        help="both storms at the same time (default: the hardened storm, its servers "
                             "stopped, then the plain one)")
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy both hubs' logs into this directory before the state is removed")
    args = parser.parse_args()

    tag = secrets.token_hex(2)
    name_prefix, netns_prefix, pool = f"jgstorm{tag}", f"js{tag}", _free_pool()
    state = temp_state_dir("jovial-guard-storm-")
    settings = StackSettings.ephemeral(
        state / "hardened", netns_prefix=netns_prefix, egress_pool=pool, engine_socket=state / "podman.sock",
        extra_env={"JOVIAL_GUARD_NAME_PREFIX": name_prefix, "JOVIAL_GUARD_HOME_VOLUME": name_prefix + "-home-{username}"},
    )
    stack = EmbeddedStack(settings, progress=lambda m: print(f"  {m}", flush=True))
    plain_hub: HubProcess | None = None
    n = args.users
    try:
        stack.start()
        token = settings.api_token or ""
        plain_settings = StackSettings.ephemeral(state / "plain", netns_prefix=netns_prefix, egress_pool=pool,
                                                 engine_socket=settings.engine_socket, extra_env=dict(settings.extra_env))
        plain_settings.api_token = token
        config = state / "plain_config.py"
        config.write_text(PLAIN_CONFIG.format(config=str(settings.config_file), limit=plain_limit()))
        plain_settings.config_file = config
        env = stack.hub_env()
        env.update({
            # The plain hub keeps its own database, cookie secret and proxy pid file.
            HUB_STATE_ENV: str(plain_settings.state_dir),
            "JOVIAL_GUARD_BIND_URL": plain_settings.url,
            "JOVIAL_GUARD_HUB_PORT": str(plain_settings.hub_port),
            "JOVIAL_GUARD_PROXY_API_PORT": str(plain_settings.proxy_api_port),
            "JOVIAL_GUARD_EGRESS_SPARES": "0",  # the plain hub makes no namespaces
            "JOVIAL_GUARD_POLICY_ENGINE": "opa",  # and decides nothing: no compiled policy to load
        })
        plain_hub = HubProcess(plain_settings, env=env).start()
        hub_log = settings.state_dir / "jupyterhub.log"
        log_offset = hub_log.stat().st_size

        hard_users = [f"storm{i:03d}" for i in range(n)]
        plain_users = [f"plain{i:03d}" for i in range(n)]

        def hardened_storm() -> StormResult:
            return storm(settings.url, token, stack.hub.pid or 0, hard_users,  # type: ignore[union-attr]
                         deadline=args.deadline, name_prefix=f"{name_prefix}-storm")

        def plain_storm() -> StormResult:
            return storm(plain_settings.url, token, plain_hub.pid or 0, plain_users,  # type: ignore[union-attr]
                         deadline=args.deadline, name_prefix=f"{name_prefix}-plain")

        if not args.side_by_side:
            print(f"storm on the hardened hub: {n} users at once", flush=True)
            hard = hardened_storm()
            report("hardened", hard, n)
            stop_all(settings.url, token, hard_users)
            print(f"storm on the plain hub: {n} users at once", flush=True)
            plain = plain_storm()
        else:
            # Side by side: whatever else loads the machine falls on both storms alike.
            print(f"storms on both hubs at the same time: {n} users at once on each", flush=True)
            with ThreadPoolExecutor(max_workers=2) as both:
                hard_future, plain_future = both.submit(hardened_storm), both.submit(plain_storm)
                hard, plain = hard_future.result(), plain_future.result()
            report("hardened", hard, n)
        storm_log = hub_log.read_bytes()[log_offset:].decode(errors="replace")
        hook_ms = [float(m) for m in re.findall(r"jovial_guard: admitted .* hook_ms=([0-9.]+)", storm_log)]
        queued_ms = [float(m) for m in re.findall(r"jovial_guard: admitted .* queued_ms=([0-9.]+)", storm_log)]
        spares = re.findall(r"spare_namespaces_taken=(\d+) made=(\d+)", storm_log)
        report("plain", plain, n)
        # The hub stops the last storm's servers itself when it stops (cleanup_servers).
    finally:
        if plain_hub is not None:
            plain_hub.stop()
        stack.stop()
        cleanup(name_prefix, netns_prefix, pool)
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in ("hardened", "plain"):
                log = state / name / "jupyterhub.log"
                if log.exists():
                    shutil.copy(log, args.keep_logs / f"{name}-jupyterhub.log")
        shutil.rmtree(state, ignore_errors=True)

    slots = plain_limit()
    mode = "both storms at the same time" if args.side_by_side else "one storm after the other"
    print(f"\n{n} users at once on each hub ({mode}): hardened {slots} start slots, the rest queued "
          f"in the hook; plain concurrent_spawn_limit {slots}, the rest 429 + Retry-After")
    report("hardened", hard, n)
    report("plain", plain, n)
    hook_p50 = percentile(hook_ms, 50) if hook_ms else float("nan")
    hook_p99 = percentile(hook_ms, 99) if hook_ms else float("nan")
    print(f"  hook in the hub during the storm: p50 {hook_p50:.1f} ms, p99 {hook_p99:.1f} ms (n={len(hook_ms)}; "
          "decision, namespace, storage grant, render, spawn listeners)")
    if queued_ms:
        print(f"  queue wait before the hook: p50 {percentile(queued_ms, 50) / 1000:.1f} s, "
              f"p99 {percentile(queued_ms, 99) / 1000:.1f} s")
    if spares:
        taken, made = spares[-1]
        print(f"  egress namespaces (hub total): {taken} spares taken, {made} made during a spawn")
    all_ready = max(hard.ready.values()) if hard.ready else float("nan")
    plain_all = max(plain.ready.values()) if plain.ready else float("nan")
    hard_mb = (hard.rss_ready_mb - hard.rss_before_mb) / max(len(hard.ready), 1)
    plain_mb = (plain.rss_ready_mb - plain.rss_before_mb) / max(len(plain.ready), 1)
    guard_mb = hard_mb - plain_mb
    print(f"  hub tree RSS growth per running server: hardened {hard_mb:.2f} MB, plain {plain_mb:.2f} MB; "
          f"the guard's own share {guard_mb:.2f} MB")
    print(f"storm: n={n} ready={len(hard.ready)} failed={len(hard.failed)} all_ready_s={all_ready:.1f} "
          f"plain_all_ready_s={plain_all:.1f} ratio={all_ready / plain_all:.2f} hook_p99_ms={hook_p99:.1f} "
          f"guard_mb_per_user={guard_mb:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
