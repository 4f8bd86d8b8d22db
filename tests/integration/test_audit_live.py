"""Live audit against the embedded stack: real podman, real JupyterHub, real kernel.

- A user's notebook container allocates past its memory limit; the kernel OOM-kills the
  process; the engine source records it, attributed to the hub user through the spawn
  registry filled from the Hub API's spawner state.
- A response rule stops a real user server through the Hub REST API.
- A response rule cuts a real user's network: drop-all nftables inside the user's egress
  namespace (the project's namespace, never the host's).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jovial_guard.audit.hub_registry import register_from_hub
from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.spawn.network import namespace_key

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "audit"
#: Allocate 64 MiB at a time, touching every page, up to 4 GiB: past the default profile's
#: 2Gi limit, bounded in case the limit were not enforced.
ALLOCATE = "x = []\nfor _ in range(64):\n    x.append(bytearray(b'x' * (64 << 20)))\nprint('limit not enforced')"


async def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def records(running: RunningAudit, **query: Any) -> list[dict[str, Any]]:
    return list(run_query(running.service.directory, Query(**query)))


@pytest.fixture
async def live_audit(embedded_hub: Any, tmp_path: Path) -> AsyncIterator[RunningAudit]:
    rules = tmp_path / "responses.yaml"
    rules.write_text(json.dumps({
        "version": 1,
        "rate_limit": {"max_responses": 5, "per_seconds": 60},
        "rules": [
            {"name": "shell-stops-server", "match": {"rules": ["Terminal shell in container"]},
             "actions": ["notify", "stop_server"]},
            {"name": "credential-read-cuts-network", "match": {"rules": ["Read sensitive file untrusted"]},
             "actions": ["cut_network"]},
        ],
    }))
    podman = embedded_hub.stack.podman
    running = await RunningAudit(AuditSettings(
        directory=tmp_path / "audit", port=0, engine_url=podman.base_url, rules_path=rules,
        hub_api_url=embedded_hub.api_url, hub_token=embedded_hub.api_token, checkpoint_interval=0.2,
    )).start()
    stream = running.sources[0]
    await asyncio.wait_for(stream.connected.wait(), 30)
    yield running
    await running.stop()


async def spawn_registered(hub: Any, running: RunningAudit, user: str, *, netns: bool = False) -> str:
    await asyncio.to_thread(hub.spawn, user)
    owner = await register_from_hub(running.registry, api_url=hub.api_url, token=hub.api_token, user=user,
                                    netns=hub.egress.user_ns(namespace_key(user)) if netns else None)
    container = await asyncio.to_thread(hub.container, user)
    assert owner is not None and owner.user == user
    assert owner.container_id == container.id  # the hub's spawner state names the real container
    return str(container.id)


async def test_oom_kill_in_user_container_lands_attributed(embedded_hub: Any, live_audit: RunningAudit) -> None:
    user = "auditoom"
    cid = await spawn_registered(embedded_hub, live_audit, user)
    # The engine reported the server's container starting (the stream now watches its cgroup).
    await wait_for(lambda: [r for r in records(live_audit, rule="container start") if r["container_id"] == cid],
                   30, "the container start record")
    rc, output = await asyncio.to_thread(embedded_hub.exec, user, ["python3", "-c", ALLOCATE], 120)
    assert rc == 137, output  # SIGKILL from the kernel's OOM killer
    oom = await wait_for(lambda: records(live_audit, rule="container oom", user=user), 30, "the OOM record")
    assert oom[0]["attribution"] == "registry" and oom[0]["container_id"] == cid
    assert oom[0]["fields"]["oom_kills"] >= 1
    # The engine's own events for the exec landed attributed too.
    exits = await wait_for(lambda: [r for r in records(live_audit, kind="engine", user=user)
                                    if r["rule"] == "container exec exit"], 30, "the exec exit record")
    assert exits[-1]["fields"]["exit_code"] == "137" and exits[-1]["fields"]["killed"] is True
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{live_audit.url}/metrics") as resp:
            metrics = await resp.text()
    assert 'jovial_guard_audit_events_total{attributed="true",kind="engine",priority="Warning",rule="container oom"}' in metrics


def alert_for(name: str, cid: str, container_name: str) -> dict[str, Any]:
    alert = json.loads((VECTORS / "falco" / name).read_text())
    alert["output_fields"]["container.id"] = cid[:12]
    alert["output_fields"]["container.name"] = container_name
    return alert


async def test_response_rule_stops_a_real_server(embedded_hub: Any, live_audit: RunningAudit) -> None:
    user = "auditstop"
    cid = await spawn_registered(embedded_hub, live_audit, user)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{live_audit.url}/falco",
                                json=alert_for("terminal_shell.json", cid, embedded_hub.container_name(user))) as resp:
            assert resp.status == 200
    await live_audit.responder.drain(60)  # type: ignore[union-attr]
    stop = [r for r in records(live_audit, kind="response", user=user) if r["fields"]["action"] == "stop_server"]
    assert stop and stop[0]["fields"]["outcome"] == "done", stop

    def server_gone() -> bool:
        model = embedded_hub.api("GET", f"/users/{user}").json()
        return not model.get("servers", {}).get("")

    await wait_for(server_gone, 60, f"{user}'s server to stop")
    await wait_for(lambda: not embedded_hub.container_exists(user), 60, f"{user}'s container to go")


async def test_response_rule_cuts_a_real_users_network(embedded_hub: Any, live_audit: RunningAudit) -> None:
    user = "auditcut"
    cid = await spawn_registered(embedded_hub, live_audit, user, netns=True)
    assert "jovial_guard_cut" not in await asyncio.to_thread(embedded_hub.user_rules, user)
    hub_port = embedded_hub.stack.settings.hub_port
    probe = (f"import socket\ns = socket.socket(); s.settimeout(10)\n"
             f"try:\n    s.connect(({embedded_hub.egress.hub_address!r}, {hub_port})); print('open')\n"
             f"except OSError as e:\n    print('blocked', e)")
    rc, output = await asyncio.to_thread(embedded_hub.exec, user, ["python3", "-c", probe], 30)
    assert "open" in output, output
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{live_audit.url}/falco",
                                json=alert_for("read_sensitive_file.json", cid, embedded_hub.container_name(user))) as resp:
            assert resp.status == 200
    await live_audit.responder.drain(60)  # type: ignore[union-attr]
    (cut,) = [r for r in records(live_audit, kind="response", user=user)]
    assert cut["fields"]["action"] == "cut_network" and cut["fields"]["outcome"] == "done", cut["fields"]["detail"]
    rules = await asyncio.to_thread(embedded_hub.user_rules, user)
    assert "table inet jovial_guard_cut" in rules and "policy drop" in rules
    # The server can no longer reach the hub API it could reach a moment ago (loopback-only
    # addresses of the project's router; nothing leaves the machine).
    rc, output = await asyncio.to_thread(embedded_hub.exec, user, ["python3", "-c", probe], 30)
    assert "blocked" in output, output
    await asyncio.to_thread(embedded_hub.stop, user)
