"""`PolicyEngine`: Workload in, Decision out, fail closed.

The one place that turns an OPA answer into a :class:`~jovial_guard.decision.Decision`.
Every failure (OPA down, deadline passed, undefined or malformed answer) becomes a denial
with rule ``policy-engine-unavailable``; nothing here can produce an allow that OPA did
not give.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

from ..decision import ENGINE_UNAVAILABLE, Decision
from ..errors import PolicyEngineUnavailable
from ..workload import Workload
from .client import OpaConnection, encode_input

log = logging.getLogger(__name__)

#: Where the combined decision lives in the policy set.
DECISION_PACKAGE = "jovial_guard.main"
DECISION_RULE = "decision"

#: Callback told about every decision (decision log, audit, metrics); must not raise.
DecisionListener = Callable[[Workload, Decision, float], Awaitable[None] | None]


class PolicyEngine:
    """Ask OPA about workloads, with a deadline, never raising for OPA trouble."""

    def __init__(
        self,
        connection: OpaConnection,
        *,
        deadline: float = 2.0,
        listeners: Iterable[DecisionListener] = (),
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive seconds, e.g. 2.0")
        self.connection = connection
        self.deadline = deadline
        self.listeners = list(listeners)

    async def decide(self, workload: Workload, *, input_json: bytes | None = None) -> Decision:
        """Decide one workload. Always returns; denials carry the reason.

        ``input_json``: ``encode_input(workload.to_input())`` when the caller already made
        it (the admission handler keys its cache with the same bytes).
        """
        started = time.perf_counter()
        decision = await self._decide(workload, input_json)
        elapsed = time.perf_counter() - started
        for listener in self.listeners:
            try:
                result = listener(workload, decision, elapsed)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a listener must never change a decision
                log.exception("decision listener failed")
        return decision

    async def decide_many(self, workloads: Iterable[Workload]) -> list[Decision]:
        """Decide a batch concurrently over the one connection."""
        return list(await asyncio.gather(*(self.decide(w) for w in workloads)))

    async def revision(self) -> str:
        """The revision OPA has loaded (raises PolicyEngineUnavailable if it cannot say)."""
        return str(await self.connection.get_data("jovial_guard_meta/revision"))

    async def _decide(self, workload: Workload, input_json: bytes | None) -> Decision:
        try:
            encoded = input_json if input_json is not None else encode_input(workload.to_input())
            raw = await asyncio.wait_for(self._query(encoded), timeout=self.deadline)
        except asyncio.TimeoutError:
            return Decision.deny(
                ENGINE_UNAVAILABLE,
                f"The policy engine did not answer within {self.deadline:g}s, so the workload "
                "was not admitted. Try again; if it persists, tell the platform admins.",
            )
        except PolicyEngineUnavailable as exc:
            return Decision.deny(
                ENGINE_UNAVAILABLE,
                f"The policy engine could not decide ({exc}), so the workload was not admitted.",
            )
        except Exception as exc:  # noqa: BLE001 - an unexpected failure still fails closed
            log.exception("unexpected error asking OPA")
            return Decision.deny(ENGINE_UNAVAILABLE, f"The policy engine failed unexpectedly ({type(exc).__name__}).")
        try:
            return Decision.from_opa(raw)
        except PolicyEngineUnavailable as exc:
            return Decision.deny(ENGINE_UNAVAILABLE, f"The policy engine gave an unusable answer: {exc}")

    async def _query(self, input_json: bytes) -> Any:
        return await self.connection.query_encoded(DECISION_PACKAGE, DECISION_RULE, input_json)
