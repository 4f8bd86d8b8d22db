"""The node agent's attestation loop: every notebook pod running on this node, read from
``/proc`` and compared with the pod the API server admitted (after the webhook's patch).

Why the pod spec is the record here: on Kubernetes the webhook's patch *is* the rendered
decision, and the API server keeps it; :func:`jovial_guard.attest.expect.from_pod` turns it
into the same :class:`Expected` the embedded record gives. A container is found through its
cgroup (the kubelet names the container's cgroup after its id), which works for any CRI
runtime; then every process in its namespaces is read, as in the embedded loop.

Each check is one JSON line on the agent's log (and, with ``audit_url``, an event posted to
the audit service's ``/attestation`` intake, attributed there by the pod's user label).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..admission.records import NOTEBOOK_ANNOTATION
from ..attest import observe as obs
from ..attest.compare import Drift, compare
from ..attest.confirm import confirmed, looking_again
from ..attest.expect import RecordUnusable, from_pod
from ..attest.report import attestation_event
from ..audit.events import SERVERNAME_LABEL, USERNAME_LABEL
from ..runtime import procfs

log = logging.getLogger("jovial_guard.node.attest")
SOURCE = "node-agent"
#: zero-to-jupyterhub's label on every notebook pod.
DEFAULT_SELECTOR = "component=singleuser-server"

Sink = Callable[[dict[str, Any]], None]


def cgroup_index(*, proc: Path = procfs.PROC) -> dict[str, list[int]]:
    """``{last path element of the pids (or unified) cgroup: [pids]}`` for every process."""
    index: dict[str, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        paths = procfs.read_cgroups(int(entry.name), proc=proc)
        if not paths:
            continue
        path = paths.get("pids") or paths.get("")
        if path:
            index.setdefault(path.rstrip("/").rsplit("/", 1)[-1], []).append(int(entry.name))
    return index


def container_pid(container_id: str, index: Mapping[str, list[int]]) -> int | None:
    """The first process of a container (``containerd://ID``, ``cri-o://ID``...), or None."""
    cid = container_id.partition("://")[2] or container_id
    for name, pids in index.items():
        if cid and (name == cid or name.endswith(cid) or name.endswith(cid + ".scope")):
            return min(pids)
    return None


def http_sink(audit_url: str, *, token: str | None = None, timeout: float = 5.0) -> Sink:
    """Post each event to the audit service's ``/attestation`` intake (errors are logged)."""
    url = audit_url.rstrip("/") + "/attestation"

    def send(event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str).encode()
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
        except OSError as exc:
            log.error("could not post the attestation to %s: %s", url, exc)

    return send


@dataclass
class NodeAttestor:
    """Attests the notebook pods of ``node_name``; :meth:`run` repeats every ``interval``."""

    core: Any
    node_name: str
    selector: str = DEFAULT_SELECTOR
    sinks: list[Sink] = field(default_factory=list)
    previous: dict[str, list[Drift]] = field(default_factory=dict)

    def pods(self) -> list[dict[str, Any]]:
        """The running notebook pods here: the selector's, and every pod the webhook recorded as
        a notebook (``jovial-guard.io/notebook``: a notebook only by its name or claims too)."""
        here = f"spec.nodeName={self.node_name},status.phase=Running"
        serialize = self.core.api_client.sanitize_for_serialization
        labelled = serialize(self.core.list_pod_for_all_namespaces(field_selector=here, label_selector=self.selector))
        found: dict[str, dict[str, Any]] = {p["metadata"]["uid"]: p for p in labelled.get("items", [])}
        for pod in serialize(self.core.list_pod_for_all_namespaces(field_selector=here)).get("items", []):
            if (pod["metadata"].get("annotations") or {}).get(NOTEBOOK_ANNOTATION) == "true":
                found.setdefault(pod["metadata"]["uid"], pod)
        return list(found.values())

    def attest_once(self) -> list[dict[str, Any]]:
        """One pass over every running notebook container on this node; the events."""
        pods = self.pods()
        if not pods:
            return []
        cgroups, namespaces = cgroup_index(), procfs.namespace_index()
        events = []
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                event = self._check(pod, status, cgroups, namespaces)
                if event is not None:
                    events.append(event)
        for event in events:
            log.info("attestation %s", json.dumps(event, sort_keys=True, default=str))
            for sink in self.sinks:
                sink(event)
        return events

    def _check(self, pod: dict[str, Any], status: dict[str, Any], cgroups: Mapping[str, list[int]],
               namespaces: Mapping[str, list[int]]) -> dict[str, Any] | None:
        meta = pod.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        cid = str(status.get("containerID") or "")
        pid = container_pid(cid, cgroups) if "running" in (status.get("state") or {}) else None
        if pid is None:
            return None
        key = f"{meta.get('namespace')}/{meta.get('name')}/{status.get('name')}"
        started = time.perf_counter()
        try:
            expected = from_pod(pod, str(status.get("name")))
            seen = obs.observe(pid, index=namespaces)
        except (RecordUnusable, obs.ContainerGone) as exc:
            log.warning("cannot attest %s: %s", key, exc)
            return None
        drifts = confirmed(compare(expected, seen),
                           looking_again(expected, lambda: obs.observe(pid, index=procfs.namespace_index())))
        previous = self.previous.get(key)
        self.previous[key] = drifts
        event = attestation_event(
            user=labels.get(USERNAME_LABEL), server=labels.get(SERVERNAME_LABEL, ""), drifts=drifts,
            previous=previous, source=SOURCE, container_id=cid, pod=str(meta.get("name")),
            namespace=str(meta.get("namespace")),
            fields={"pid": pid, "processes": len(seen.processes), "container": status.get("name"),
                    "node": self.node_name, "seconds": round(time.perf_counter() - started, 6)})
        event["labels"] = labels
        return event

    def run(self, *, interval: float, stop: threading.Event) -> None:
        """Attest every ``interval`` seconds until ``stop``; a failed pass is logged (once
        while the same failure repeats) and retried."""
        last_error = ""
        while not stop.is_set():
            began = time.monotonic()
            try:
                self.attest_once()
                last_error = ""
            except Exception as exc:  # noqa: BLE001 - the loop outlives any one bad pass
                message = _explain(exc)
                if message != last_error:
                    log.error("attestation pass failed: %s", message)
                last_error = message
            stop.wait(max(0.0, interval - (time.monotonic() - began)))


def _explain(exc: Exception) -> str:
    """What to fix, for the failures a deployment can cause."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return (f"the API server refused to list pods ({status}): the agent's ClusterRole needs "
                "'list' on pods for attestation (or run with --attest-interval 0)")
    if isinstance(exc, PermissionError):
        return (f"{exc}: attestation reads other processes' /proc entries; the agent needs hostPID "
                "and CAP_SYS_PTRACE")
    return f"{type(exc).__name__}: {exc}"


def start(api: Any, node_name: str, *, interval: float, stop: threading.Event,
          selector: str = DEFAULT_SELECTOR, audit_url: str | None = None,
          audit_token: str | None = None) -> threading.Thread | None:
    """The agent's hook: attest on a thread of its own beside the profile loop (None: off)."""
    if interval <= 0:
        return None
    from kubernetes import client

    attestor = NodeAttestor(client.CoreV1Api(api), node_name, selector=selector,
                            sinks=[http_sink(audit_url, token=audit_token)] if audit_url else [])
    thread = threading.Thread(target=attestor.run, kwargs={"interval": interval, "stop": stop},
                              name="attestation", daemon=True)
    thread.start()
    return thread
