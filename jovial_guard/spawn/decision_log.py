"""A JSON-lines decision log listener for the hub (one line per spawn decision).

Why here: every decision must be logged with its policy revision. This is the minimal,
append-only log the embedded hub writes by default; the audit module can attach its
tamper-evident log through ``c.JovialGuard.decision_listeners`` the same way.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

from ..decision import Decision
from ..workload import Workload

_LOCK = threading.Lock()


def jsonl_listener(path: str | Path) -> Callable[[Workload, Decision, float], None]:
    """A listener appending ``{time, user, profile, allowed, rules, revision, ...}`` to path."""
    target = Path(path)

    def listener(workload: Workload, decision: Decision, seconds: float) -> None:
        record = {
            "version": 1,
            "time": time.time(),
            "origin": workload.origin,
            "user": workload.user.name if workload.user else None,
            "groups": list(workload.user.groups) if workload.user else [],
            "profile": workload.profile,
            "allowed": decision.allowed,
            "rules": [r.rule for r in decision.reasons],
            "message": decision.message(),
            "policy_revision": decision.policy_revision,
            "decision_id": decision.decision_id,
            "workload_digest": workload.digest(),
            "seconds": round(seconds, 6),
        }
        line = json.dumps(record, sort_keys=True) + "\n"
        with _LOCK:
            with open(target, "a") as out:
                out.write(line)

    return listener
