"""The node agent's readiness: a status file written after each good pass, and its check.

Kubernetes asks a pod whether it is ready; for the node agent that must mean "the profiles
are installed, the node is labelled and (when it serves one) the CNI hand-off socket
answers", not "the process runs". The agent's pod is privileged and on the host network, so
the question is asked without a network port: an exec probe (``jovial-guard node-ready``),
the way Security Profiles Operator's per-node daemon gates its own readiness on the profiles
being in place, here without an HTTP listener on the node.

The agent writes the status file atomically after every pass that installed the profiles and
labelled the node, and removes it when a pass fails or the agent starts. The check then
reads it and asks three things: is it fresh (a stuck or failing loop stops refreshing it),
are the profiles it names still on disk with the recorded digests, and does the socket it
names answer a ping. Each failure is one line that says what to look at.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .cni_plugin import ask_agent

#: Where the DaemonSets keep it: an emptyDir of the pod, so a new pod never inherits a status.
DEFAULT_STATUS_FILE = Path("/run/jovial-guard/status/ready.json")
#: Seconds a pass may overrun its interval before the status counts as stale.
GRACE = 30.0
#: Seconds the socket has to answer the ping.
SOCKET_TIMEOUT = 5.0
#: The request that only asks whether the egress server answers (no namespace descriptor);
#: it changes nothing.
PING = {"ping": True}


@dataclass(frozen=True)
class Status:
    """What the last good pass left on disk."""

    node: str
    written: float
    interval: float
    profile_dir: str
    profiles: dict[str, str]
    socket: str | None = None


def record(path: Path, *, node: str, interval: float, profile_dir: Path, profiles: Mapping[str, bytes],
           socket_path: Path | None, now: float | None = None) -> Status:
    """Write the status of a pass that just succeeded (atomically: the probe never reads half)."""
    status = Status(node=node, written=time.time() if now is None else now, interval=interval,
                    profile_dir=str(profile_dir),
                    profiles={name: hashlib.sha256(data).hexdigest() for name, data in sorted(profiles.items())},
                    socket=str(socket_path) if socket_path is not None else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(status), indent=1).encode(), mode=0o644, durable=False)
    return status


def clear(path: Path) -> None:
    """No status: the next check says not ready until a pass succeeds again."""
    path.unlink(missing_ok=True)


def load(path: Path) -> Status:
    """The status in ``path``; ValueError with the reason when it is not one."""
    doc: Any = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    try:
        return Status(node=str(doc["node"]), written=float(doc["written"]), interval=float(doc["interval"]),
                      profile_dir=str(doc["profile_dir"]),
                      profiles={str(k): str(v) for k, v in dict(doc["profiles"]).items()},
                      socket=None if doc.get("socket") is None else str(doc["socket"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"missing or malformed field {exc}") from None


def ping(path: Path, *, timeout: float = SOCKET_TIMEOUT) -> str | None:
    """None when the egress server on ``path`` answers the ping, else why not."""
    try:
        answer = ask_agent(str(path), PING, None, timeout=timeout)
    except (OSError, ValueError) as exc:
        return f"{exc}"
    if answer.get("ok") is not True:
        return f"unexpected answer {answer!r}"
    return None


def problems(path: Path, *, now: float | None = None) -> list[str]:
    """Why the agent is not ready (empty when it is)."""
    try:
        status = load(path)
    except FileNotFoundError:
        return [f"no successful pass yet ({path} is absent): the profiles are not installed or the node "
                "is not labelled; see the agent's log"]
    except (OSError, ValueError) as exc:
        return [f"{path} is not a readable status file ({exc})"]
    out = []
    age = (time.time() if now is None else now) - status.written
    if age > 2 * status.interval + GRACE:
        out.append(f"the last successful pass was {age:.0f} s ago (passes every {status.interval:g} s): "
                   "the agent's loop is failing or stuck; see its log")
    directory = Path(status.profile_dir)
    for name, digest in sorted(status.profiles.items()):
        try:
            on_disk = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        except OSError as exc:
            out.append(f"profile {directory / name} is unreadable ({exc.strerror or exc})")
            continue
        if on_disk != digest:
            out.append(f"profile {directory / name} changed since the last pass")
    if status.socket is not None:
        why = ping(Path(status.socket))
        if why is not None:
            out.append(f"the CNI hand-off socket {status.socket} does not answer ({why})")
    return out
