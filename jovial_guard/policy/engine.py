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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..decision import ENGINE_UNAVAILABLE, Decision
from ..errors import PolicyEngineUnavailable
from ..workload import Workload
from .client import NoSuchData, OpaConnection

log = logging.getLogger(__name__)

#: Where the combined decision lives in the policy set.
DECISION_PACKAGE = "jovial_guard.main"
DECISION_RULE = "decision"

#: The revision of policies loaded without ``data.jovial_guard_meta.revision`` (the same
#: word main.rego puts into such decisions).
UNVERSIONED = "unversioned"
#: What to do about it, for logs and /readyz.
UNVERSIONED_HELP = (
    "OPA serves policies without data.jovial_guard_meta.revision (unversioned), so no decision "
    "could be traced to a policy: load a revision with them, e.g. `opa run --server policies/ "
    'revision.json` where revision.json is {"jovial_guard_meta": {"revision": "<an id such as the '
    'git commit>"}}, or serve a signed bundle as `jovial-guard up` does'
)

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

    async def decide(self, workload: Workload) -> Decision:
        """Decide one workload. Always returns; denials carry the reason."""
        started = time.perf_counter()
        decision = await self._decide(workload)
        elapsed = time.perf_counter() - started
        for listener in self.listeners:
            try:
                result = listener(workload, decision, elapsed)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("decision listener failed")
        return decision

    async def decide_many(self, workloads: Iterable[Workload]) -> list[Decision]:
        """Decide a batch concurrently over the one connection."""
        return list(await asyncio.gather(*(self.decide(w) for w in workloads)))

    async def revision(self) -> str:
        """The revision OPA has loaded, :data:`UNVERSIONED` when its policies carry none.

        Raises PolicyEngineUnavailable when OPA cannot be asked.
        """
        try:
            return str(await self.connection.get_data("jovial_guard_meta/revision"))
        except NoSuchData:
            return UNVERSIONED

    async def _decide(self, workload: Workload) -> Decision:
        try:
            raw = await asyncio.wait_for(self._query(workload.to_input()), timeout=self.deadline)
        except TimeoutError:
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
        except Exception as exc:
            log.exception("unexpected error asking OPA")
            return Decision.deny(ENGINE_UNAVAILABLE, f"The policy engine failed unexpectedly ({type(exc).__name__}).")
        try:
            return Decision.from_opa(raw)
        except PolicyEngineUnavailable as exc:
            return Decision.deny(ENGINE_UNAVAILABLE, f"The policy engine gave an unusable answer: {exc}")

    async def _query(self, input_doc: dict[str, Any]) -> Any:
        return await self.connection.query(DECISION_PACKAGE, DECISION_RULE, input_doc)
