"""One reconcile pass of the node agent, and the loop that repeats it.

A pass compares the kubelet's copy of the profiles with the source. If anything is missing
or different, the node's label is removed *first* (so the scheduler stops placing notebooks
here), the profiles are rewritten and checked again, and only then is the label set back.
A pass that cannot install leaves the node unlabelled and raises.

The agent's other duties (grants, and any later periodic check such as attestation) are
passes too, each run by :func:`run_every` on its own thread; :func:`start` starts one. The
egress socket is a server thread (:mod:`.egress`). The CLI wires them together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import JovialGuardError
from . import profiles as prof
from .labels import NodeLabels

log = logging.getLogger("jovial_guard.node")


@dataclass(frozen=True)
class PassResult:
    """What one pass did: the profiles it (re)wrote, and the digest the node now carries."""

    rewritten: tuple[str, ...]
    digest: str


def reconcile(profiles: Mapping[str, bytes], kubelet_root: Path, labels: NodeLabels) -> PassResult:
    digest = prof.digest(profiles)
    drifted = prof.drift(profiles, kubelet_root)
    if drifted:
        labels.mark_not_ready()
        log.warning("profiles missing or changed on the node (%s): label removed, reinstalling", ", ".join(drifted))
        try:
            prof.install(profiles, kubelet_root)
        except prof.ProfileInstallFailed:
            log.error("profile installation failed; the node stays unlabelled")
            raise
        still = prof.drift(profiles, kubelet_root)
        if still:
            raise prof.ProfileInstallFailed(f"profiles did not read back as written: {', '.join(still)}")
    labels.mark_ready(digest)
    return PassResult(rewritten=tuple(drifted), digest=digest)


def _nothing(*_: object) -> None:
    return None


def run(profiles: Mapping[str, bytes], kubelet_root: Path, labels: NodeLabels, *, interval: float,
        stop: threading.Event, after: Callable[[PassResult], None] = _nothing,
        failed: Callable[[], None] = _nothing) -> None:
    """Reconcile every ``interval`` seconds until ``stop`` is set; errors are logged and retried.

    ``after`` runs after each good pass (a JovialGuardError from it fails the pass), ``failed``
    after each failed one: they keep the readiness status and the node's other labels."""
    while not stop.is_set():
        try:
            result = reconcile(profiles, kubelet_root, labels)
            if result.rewritten:
                log.info("installed %s; node labelled (sha256:%s)", ", ".join(result.rewritten), result.digest)
            after(result)
        except JovialGuardError as exc:
            log.error("%s", exc)
            failed()
            try:
                labels.mark_not_ready()
            except JovialGuardError as unlabel:
                log.error("could not remove the label either: %s", unlabel)
        stop.wait(interval)


def run_every(name: str, step: Callable[[], object], *, interval: float, stop: threading.Event) -> None:
    """Call ``step`` every ``interval`` seconds until ``stop`` is set; a JovialGuardError is
    logged and retried at the next tick (the step must leave things safe when it raises)."""
    while not stop.is_set():
        try:
            step()
        except JovialGuardError as exc:
            log.error("%s: %s", name, exc)
        stop.wait(interval)


def start(name: str, target: Callable[[], None]) -> threading.Thread:
    """One of the agent's loops on a daemon thread named ``name``."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
