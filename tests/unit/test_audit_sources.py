"""Event sources other than HTTP: podman's events file (resumable), and JupyterHub's own
EventLogger (jupyter_events) forwarding server-action events through HubEventForwarder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.audit.sources import EngineEventsFile, HubEventForwarder

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "audit"
ALICE = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[RunningAudit]:
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0, bulk_workers=0)).start()
    running.registry.register(user="alice", server="", container_id=ALICE, container_name="jupyter-alice")
    yield running
    await running.stop()


async def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def podman_line(status: str, when: str, code: int | None = None) -> bytes:
    doc: dict[str, Any] = {"ID": ALICE, "Image": "localhost/jovial-guard/notebook:v1", "Name": "jupyter-alice",
                           "Status": status, "Time": when, "Type": "container",
                           "Attributes": {"org.jovial-guard.recipe": "8c748843cb7c2a89"}}
    if code is not None:
        doc["ContainerExitCode"] = code
    return orjson.dumps(doc) + b"\n"


async def test_podman_events_file_is_followed_and_resumed(audit: RunningAudit, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    events.write_bytes(podman_line("create", "2026-11-27T05:00:20.1Z") + podman_line("start", "2026-11-27T05:00:20.3Z"))
    follower = EngineEventsFile(audit.service, events, poll=0.05, from_start=True)
    follower.start()
    with open(events, "ab") as fh:
        fh.write(podman_line("exec_died", "2026-11-27T05:00:21.7Z", 137) + b"not json\n")
        fh.write(podman_line("died", "2026-11-27T05:00:27.0Z", 137)[:40])  # still being written
    got = await wait_for(lambda: [r["rule"] for r in run_query(audit.service.directory, Query(kind="engine"))]
                         if len(list(run_query(audit.service.directory, Query(kind="engine")))) >= 2 else None)
    assert got == ["container start", "container exec exit"]
    assert len(list(run_query(audit.service.directory, Query(kind="intake")))) == 1  # the bad line, quarantined
    await follower.stop()
    # The rest of the partial line arrives while nobody follows; a new follower resumes there.
    with open(events, "ab") as fh:
        fh.write(podman_line("died", "2026-11-27T05:00:27.0Z", 137)[40:])
    follower = EngineEventsFile(audit.service, events, poll=0.05)
    follower.start()
    await wait_for(lambda: list(run_query(audit.service.directory, Query(rule="container die"))))
    await follower.stop()
    rules = [r["rule"] for r in run_query(audit.service.directory, Query(kind="engine"))]
    assert rules == ["container start", "container exec exit", "container die"]  # nothing twice
    die = list(run_query(audit.service.directory, Query(rule="container die")))[0]
    assert die["user"] == "alice" and die["fields"]["exit_code"] == "137" and die["fields"]["killed"] is True


async def test_jupyterhub_eventlogger_forwards_server_actions(audit: RunningAudit) -> None:
    import jupyterhub
    from jupyter_events import EventLogger

    schema = Path(jupyterhub.__file__).parent / "event-schemas" / "server-actions" / "v1.yaml"
    logger = EventLogger()
    logger.register_event_schema(schema)
    forwarder = HubEventForwarder(audit.url)
    logger.register_handler(forwarder)
    schema_id = "https://schema.jupyter.org/jupyterhub/events/server-action"
    logger.emit(schema_id=schema_id, data={"action": "start", "username": "alice", "servername": ""})
    logger.emit(schema_id=schema_id, data={"action": "stop", "username": "alice", "servername": ""})
    hub = await wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        list(run_query(audit.service.directory, Query(kind="hub")))))
    assert [r["rule"] for r in hub] == ["server start", "server stop"]
    assert all(r["user"] == "alice" and r["attribution"] == "hub" for r in hub)
    forwarder.close()
    assert forwarder.failures == 0
