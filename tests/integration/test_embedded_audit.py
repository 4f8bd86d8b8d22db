"""The embedded hub runs the audit service itself: spawns, engine events and decisions land
attributed in STATE/audit, and the log verifies."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Callable

from jovial_guard.audit.query import Query, run_query


def wait_for(check: Callable[[], list[dict[str, Any]]], timeout: float, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_spawn_lands_attributed_in_the_hubs_audit_log(embedded_hub: Any) -> None:
    user = "auditwired"
    audit_dir = embedded_hub.state_dir / "audit"
    embedded_hub.spawn(user)
    cid = embedded_hub.container(user).id

    def of(**query: Any) -> Callable[[], list[dict[str, Any]]]:
        return lambda: list(run_query(audit_dir, Query(user=user, **query)))

    decisions = wait_for(of(kind="decision"), 30, "the spawn decision")
    assert decisions[-1]["fields"]["allowed"] is True
    starts = wait_for(lambda: [r for r in of(kind="engine")() if r["rule"] == "container start"], 30, "the container start")
    assert starts[-1]["container_id"] == cid and starts[-1]["attribution"] == "registry"
    wait_for(of(kind="hub"), 30, "the hub's server-action event")
    embedded_hub.stop(user)
    wait_for(lambda: [r for r in of(kind="engine")() if r["rule"] in ("container die", "container stop")], 30, "the container's end")
    verify = subprocess.run([sys.executable, "-m", "jovial_guard", "audit", "verify", "--dir", str(audit_dir)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
