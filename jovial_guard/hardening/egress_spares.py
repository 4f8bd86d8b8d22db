"""Spare namespaces: made ahead of spawns, so a spawn renames one instead of building it.

Why: making a namespace and its veth to the router is most of the kernel work a spawn's
network needs (and deleting a table or a link waits for an RCU grace period). A spare is
linked to the router with its address up; nothing runs in it until a spawn takes it and
gives it its own name (:func:`.netns.rename`). :class:`SparePool` keeps a few ready from a
background thread; a spawn that finds none makes its namespace itself.

Routes and rules depend only on the plan (the egress settings), not on the namespace, and
most users share a few plans (one per group's allowlist). So a spare is made ready for the
plan applied last: it already holds that plan's routes and ruleset, and its record keeps
the plan's key (:func:`plan_key`), the routes and the kernel's ruleset digest read right
after loading. A spawn with exactly that plan takes it as it is; a spawn with another plan
takes a spare without one (or, failing that, any spare) and loads its own routes and
ruleset into it, the spare's other routes removed (the ruleset replaces everything: it
starts with ``flush ruleset``). A spare is never handed out with a plan but its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from . import netns
from .egress_state import StateStore

log = logging.getLogger(__name__)


def plan_key(routes: Sequence[str], ruleset: str) -> str:
    """What a spare made ready for a plan records of it (pure): a digest of its routes and
    ruleset text."""
    body = json.dumps([list(routes), ruleset], separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class ClaimedSpare:
    """A spare a spawn took: its link, and what it was made ready with ("" and (): nothing)."""

    index: int
    address: str
    gateway: str
    prepared: str = ""
    routes: tuple[str, ...] = ()
    ruleset_digest: str = ""


class SpareNamespaces:
    """The spare half of :class:`~.egress.EgressNamespaces` (which provides the rest)."""

    prefix: str
    _state: StateStore
    #: (routes, ruleset) of the plan applied last: the plan new spares are made ready for.
    _expected: tuple[tuple[str, ...], str] | None = None

    def expect(self, routes: Sequence[str], ruleset: str) -> None:
        """Make spares from now on ready for this plan (the one most spawns ask for next)."""
        self._expected = (tuple(routes), ruleset)

    def _load_rules(self, ns: str, *, routes: Sequence[str], ruleset: str, gateway: str,
                    address: str | None = None, stale_routes: Sequence[str] = ()) -> str:
        raise NotImplementedError

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
        """One namespace linked to the router with its address up, kept for the next
        :meth:`apply`; its name. With a plan expected (:meth:`expect`) it also holds that
        plan's routes and ruleset. Only the index is taken under the lock: the kernel work
        runs beside other spawns' namespace work."""
        with self._state.lock():
            self._ensure_router_locked()
            index = self._free_index()
            ns = self.spare_ns(index)
            self._destroy_locked(ns)
            address, gateway = self._addresses(index)
            record: dict[str, object] = {"kind": "spare", "ns": ns, "index": index, "address": address,
                                         "gateway": gateway, "router_link": f"u{index}", "ready": False}
            self._state.write(ns, record)
        expected = self._expected
        try:
            self._plumb(ns, f"u{index}", gateway=gateway, address=None if expected else address)
            if expected is not None:
                digest = self._load_rules(ns, routes=expected[0], ruleset=expected[1], gateway=gateway,
                                          address=address)
                record.update({"prepared": plan_key(*expected), "routes": list(expected[0]),
                               "ruleset_digest": digest})
        except BaseException:
            with self._state.lock():
                self._destroy_locked(ns)
            raise
        with self._state.lock():
            self._state.write(ns, {**record, "ready": True})
        return ns

    def _spare_records(self) -> list[dict[str, object]]:
        return [s for s in self._state.all(f"{self.prefix}-p-")
                if s.get("kind") == "spare" and s.get("ready")]

    def spare_count(self) -> int:
        """Spares ready to be taken."""
        return len(self._spare_records())

    def discard_unfinished_spares(self) -> None:
        """Remove spares whose making never finished (a process that stopped half-way)."""
        with self._state.lock():
            for state in list(self._state.all(f"{self.prefix}-p-")):
                if state.get("kind") == "spare" and not state.get("ready"):
                    self._destroy_locked(str(state["ns"]))

    def _claim_spare_locked(self, ns: str, key: str) -> ClaimedSpare | None:
        """Rename a ready spare to ``ns``: one made ready for plan ``key`` if there is one,
        else one without a plan, else any."""
        def rank(state: dict[str, object]) -> int:
            prepared = str(state.get("prepared", ""))
            return 0 if prepared == key else 1 if not prepared else 2

        for state in sorted(self._spare_records(), key=rank):
            spare = str(state["ns"])
            if not netns.exists(spare):
                self._destroy_locked(spare)
                continue
            netns.rename(spare, ns)
            self._state.forget(spare)
            routes = state.get("routes")
            return ClaimedSpare(
                index=int(str(state["index"])), address=str(state["address"]),
                gateway=str(state["gateway"]), prepared=str(state.get("prepared", "")),
                routes=tuple(str(r) for r in routes) if isinstance(routes, list) else (),
                ruleset_digest=str(state.get("ruleset_digest", "")))
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
