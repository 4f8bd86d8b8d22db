"""The decision log: every decision, with the (masked) input that produced it.

Kept by the spawn hook and the webhook (as a PolicyEngine listener) so a security admin
can ask "who would this candidate policy lock out?" (``jovial-guard policy dry-run``)
against real traffic, and so the dashboard can show recent denials per user.

Bounded: files rotate at ``max_bytes`` and only ``keep_files`` are kept; records older
than ``retention_days`` are dropped from queries and rotated files past it are deleted.
Masked: environment values and secret-looking annotations never reach the log; the
policy does not read them, so a masked input still replays to the same decision.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decision import Decision
from ..workload import Workload

MASK = "***"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|credential|api[-_]?key|private)", re.IGNORECASE)


def mask_input(input_doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OPA input with secrets masked (env values, secret-looking annotations),
    in the pod and in the stored object an UPDATE carries beside it (``extra``)."""
    doc = copy.deepcopy(input_doc)
    workload = doc.get("workload", {})
    pod = workload.get("pod", {}) if isinstance(workload, dict) else {}
    if isinstance(pod, dict):
        _mask_pod(pod.get("spec"), pod.get("metadata"))
    extra = workload.get("extra") if isinstance(workload, dict) else None
    if isinstance(extra, dict):
        _mask_pod(extra.get("old_spec"), extra.get("old_metadata"))
    return doc


def _mask_pod(spec: Any, metadata: Any) -> None:
    if isinstance(spec, dict):
        for kind in ("containers", "initContainers", "ephemeralContainers"):
            for container in spec.get(kind) or []:
                if not isinstance(container, dict):
                    continue
                for env in container.get("env") or []:
                    if isinstance(env, dict) and "value" in env:
                        env["value"] = MASK
                for key in ("args", "command"):
                    if isinstance(container.get(key), list):
                        container[key] = [_mask_arg(a) for a in container[key]]
    if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
        metadata["annotations"] = {k: (MASK if _SECRET_KEY.search(k) else v) for k, v in metadata["annotations"].items()}


def _mask_arg(arg: Any) -> Any:
    if isinstance(arg, str) and _SECRET_KEY.search(arg) and "=" in arg:
        return arg.split("=", 1)[0] + "=" + MASK
    return arg


@dataclass(frozen=True)
class DecisionRecord:
    time: float
    decision_id: str
    origin: str
    user: str | None
    input_digest: str
    allowed: bool
    reasons: list[dict[str, str]]
    policy_revision: str
    latency_ms: float
    input: dict[str, Any]
    #: Exemptions that lifted a rule ({"id", "rule", "reason", "expires"}), and the scope
    #: the workload was decided in; absent from records written before they existed.
    exemptions: list[dict[str, Any]] = field(default_factory=list)
    scope: str = ""
    #: The strictest enforcement mode a violation acted in, and the violations admitted
    #: in warn and audit mode; absent from records written before modes existed.
    mode: str = "none"
    warned: list[dict[str, str]] = field(default_factory=list)
    audited: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DecisionRecord:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


class DecisionLog:
    """Append-only JSON-lines decision log with size rotation and age retention."""

    def __init__(self, path: Path, *, max_bytes: int = 16 * 2**20, keep_files: int = 8, retention_days: float = 30.0) -> None:
        if max_bytes <= 0 or keep_files < 1 or retention_days <= 0:
            raise ValueError("max_bytes > 0, keep_files >= 1 and retention_days > 0 are required")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.retention_seconds = retention_days * 86400
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> DecisionLog:
        """The log itself, not a copy: traitlets deep-copies config values (e.g. when it is
        a ``c.JovialGuard.decision_listeners`` entry) and a lock cannot be copied."""
        return self

    # The PolicyEngine listener signature: (workload, decision, seconds).
    def __call__(self, workload: Workload, decision: Decision, seconds: float) -> None:
        self.record(workload, decision, seconds)

    def record(self, workload: Workload, decision: Decision, seconds: float, *, now: float | None = None) -> DecisionRecord:
        record = DecisionRecord(
            time=time.time() if now is None else now,
            decision_id=decision.decision_id,
            origin=workload.origin,
            user=workload.user.name if workload.user else workload.request_user,
            input_digest=workload.digest(),
            allowed=decision.allowed,
            reasons=[r.to_json() for r in decision.reasons],
            policy_revision=decision.policy_revision,
            latency_ms=round(seconds * 1000, 3),
            input=mask_input(workload.to_input()),
            exemptions=[e.to_json() for e in decision.exemptions],
            scope=decision.scope,
            mode=decision.mode,
            warned=[r.to_json() for r in decision.warned],
            audited=[r.to_json() for r in decision.audited],
        )
        line = json.dumps(record.__dict__, sort_keys=True, separators=(",", ":")) + "\n"
        with self._lock:
            self._rotate_if_needed(len(line))
            with open(self.path, "ab") as fh:
                # A torn last line (a crash mid-write) must not swallow this record.
                if fh.tell() > 0 and not self._ends_with_newline():
                    fh.write(b"\n")
                fh.write(line.encode())
        return record

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _rotated(self) -> list[Path]:
        return [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep_files)]

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        rotated = self._rotated()
        if rotated:
            rotated[-1].unlink(missing_ok=True)
            for older, newer in zip(reversed(rotated[1:]), reversed(rotated[:-1]), strict=True):
                if newer.exists():
                    os.replace(newer, older)
            os.replace(self.path, rotated[0])
        else:
            self.path.unlink()
        self._expire_files()

    def _expire_files(self) -> None:
        cutoff = time.time() - self.retention_seconds
        for path in self._rotated():
            if path.exists() and path.stat().st_mtime < cutoff:
                path.unlink()

    def records(self, *, since: float | None = None, user: str | None = None, now: float | None = None) -> Iterator[DecisionRecord]:
        """Records oldest first; a torn or foreign line is skipped, never fatal."""
        horizon = (time.time() if now is None else now) - self.retention_seconds
        floor = max(horizon, since) if since is not None else horizon
        for path in [*reversed(self._rotated()), self.path]:
            if not path.exists():
                continue
            with open(path) as fh:
                for line in fh:
                    try:
                        record = DecisionRecord.from_json(json.loads(line))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
                    if record.time < floor or (user is not None and record.user != user):
                        continue
                    yield record
