"""Spare namespaces: made ahead of spawns, so a spawn renames one instead of building it.

Why: making a namespace and its veth to the router is most of the kernel work a spawn's
network needs (and deleting a table or a link waits for an RCU grace period). A spare is
linked to the router with its address up and has no routes and no rules: nothing can run
in it until a spawn takes it, gives it its own name (:func:`.netns.rename`), its routes and
its ruleset in one batch (:meth:`EgressNamespaces.apply`). :class:`SparePool` keeps a few
ready from a background thread; a spawn that finds none makes its namespace itself.
"""

from __future__ import annotations

import logging
import threading

from . import netns
from .egress_state import StateStore

log = logging.getLogger(__name__)


class SpareNamespaces:
    """The spare half of :class:`~.egress.EgressNamespaces` (which provides the rest)."""

    prefix: str
    _state: StateStore

    def _ensure_router_locked(self) -> None:
        raise NotImplementedError

    def _free_index(self, kind: str = "user") -> int:
        raise NotImplementedError

    def _addresses(self, index: int) -> tuple[str, str]:
        raise NotImplementedError

    def _plumb(self, ns: str, router_link: str, *, gateway: str, address: str | None) -> None:
        raise NotImplementedError

    def _destroy_locked(self, ns: str) -> None:
        raise NotImplementedError

    def spare_ns(self, index: int) -> str:
        return f"{self.prefix}-p-{index}"

    def make_spare(self) -> str:
        """One namespace linked to the router with its address up and no rules and no
        routes, kept for the next :meth:`apply`; its name. Only the index is taken under the
        lock: the kernel work runs beside other spawns' namespace work."""
        with self._state.lock():
            self._ensure_router_locked()
            index = self._free_index()
            ns = self.spare_ns(index)
            self._destroy_locked(ns)
            address, gateway = self._addresses(index)
            record: dict[str, object] = {"kind": "spare", "ns": ns, "index": index, "address": address,
                                         "gateway": gateway, "router_link": f"u{index}", "ready": False}
            self._state.write(ns, record)
        try:
            self._plumb(ns, f"u{index}", gateway=gateway, address=address)
        except BaseException:
            with self._state.lock():
                self._destroy_locked(ns)
            raise
        with self._state.lock():
            self._state.write(ns, {**record, "ready": True})
        return ns

    def spare_count(self) -> int:
        """Spares ready to be taken."""
        return sum(1 for s in self._state.all() if s.get("kind") == "spare" and s.get("ready"))

    def discard_unfinished_spares(self) -> None:
        """Remove spares whose making never finished (a process that stopped half-way)."""
        with self._state.lock():
            for state in list(self._state.all()):
                if state.get("kind") == "spare" and not state.get("ready"):
                    self._destroy_locked(str(state["ns"]))

    def _claim_spare_locked(self, ns: str) -> tuple[int, str, str] | None:
        """Rename a ready spare to ``ns``; its (index, address, gateway), or None."""
        for state in self._state.all():
            if state.get("kind") != "spare" or not state.get("ready"):
                continue
            spare = str(state["ns"])
            if not netns.exists(spare):
                self._destroy_locked(spare)
                continue
            netns.rename(spare, ns)
            self._state.forget(spare)
            return int(str(state["index"])), str(state["address"]), str(state["gateway"])
        return None



class SparePool:
    """Keep ``size`` spares ready, refilled by one daemon thread after each :meth:`kick`."""

    def __init__(self, namespaces: SpareNamespaces, size: int, *, settle: float = 0.3) -> None:
        self.namespaces = namespaces
        self.size = size
        #: Seconds to wait after a kick before refilling: spawns come in bursts, and making
        #: a spare takes kernel locks (RTNL) the next spawn's routes need too.
        self.settle = settle
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: Failures of the last refill (a spawn then makes its own namespace).
        self.last_error: str = ""

    def fill(self) -> None:
        """Make spares until ``size`` are ready (in the calling thread)."""
        while not self._stopped.is_set() and self.namespaces.spare_count() < self.size:
            self.namespaces.make_spare()

    def start(self) -> None:
        """Drop half-made spares of an earlier process, then refill in the background."""
        if self.size <= 0 or self._thread is not None:
            return
        self.namespaces.discard_unfinished_spares()
        self._thread = threading.Thread(target=self._run, name="jovial-guard-spares", daemon=True)
        self._thread.start()
        self.kick()

    def kick(self) -> None:
        """A spare was taken (or may be): refill soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopped.wait(self.settle):
                return
            try:
                self.fill()
                self.last_error = ""
            except Exception as exc:  # noqa: BLE001 - logged; spawns fall back to making their own
                self.last_error = str(exc)
                log.warning("jovial_guard: could not make a spare egress namespace: %s", exc)
                self._stopped.wait(5)
