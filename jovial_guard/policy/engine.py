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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from ..decision import ENGINE_UNAVAILABLE, Decision
from ..errors import PolicyEngineUnavailable
from ..workload import Workload
from .client import NoSuchData, UndefinedResult, encode_input

log = logging.getLogger(__name__)

#: Where the combined decision lives in the policy set.
DECISION_PACKAGE = "jovial_guard.main"
DECISION_RULE = "decision"
#: The same decision for many inputs in one query (policies/batch/batch.rego).
BATCH_PACKAGE = "jovial_guard.batch"
BATCH_RULE = "decisions"
#: Inputs per batch query, and batch queries in flight: OPA evaluates one query on one
#: goroutine, so a few concurrent chunks keep every core busy.
BATCH_SIZE = 50
BATCH_CONCURRENCY = 4

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


class DecisionSource(Protocol):
    """Where decisions come from: an OPA server (:class:`~.client.OpaConnection`) or the
    compiled policy in process (:class:`~.wasm_engine.WasmConnection`). Both raise
    PolicyEngineUnavailable for any failure and UndefinedResult for an undefined rule."""

    async def query_encoded(self, package_path: str, rule: str, input_json: bytes) -> Any: ...

    async def get_data(self, path: str) -> Any: ...


class PolicyEngine:
    """Ask OPA about workloads, with a deadline, never raising for OPA trouble."""

    def __init__(
        self,
        connection: DecisionSource,
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
        await self._tell(workload, decision, time.perf_counter() - started)
        return decision

    async def _tell(self, workload: Workload, decision: Decision, elapsed: float) -> None:
        for listener in self.listeners:
            try:
                result = listener(workload, decision, elapsed)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("decision listener failed")

    def _timeout_denial(self) -> Decision:
        return Decision.deny(
            ENGINE_UNAVAILABLE,
            f"The policy engine did not answer within {self.deadline:g}s, so the workload "
            "was not admitted. Try again; if it persists, tell the platform admins.",
        )

    async def decide_many(self, workloads: Iterable[Workload]) -> list[Decision]:
        """Decide a batch concurrently over the one connection."""
        return list(await asyncio.gather(*(self.decide(w) for w in workloads)))

    async def decide_batch(self, workloads: Sequence[Workload], *, size: int = BATCH_SIZE,
                           concurrency: int = BATCH_CONCURRENCY) -> list[Decision]:
        """Decide many workloads with one OPA query per ``size`` of them (the batch entry
        point evaluates ``data.jovial_guard.main.decision`` for each): far fewer round trips
        than :meth:`decide_many`, the same decisions. Each chunk has the engine's deadline;
        a chunk that fails is denied whole (fail closed); an item without a decision is
        denied. An OPA whose policy has no batch entry point (an older bundle) is asked
        one workload at a time."""
        if size < 1 or concurrency < 1:
            raise ValueError("size and concurrency must be at least 1, e.g. size=50, concurrency=4")
        chunks = [list(workloads[i:i + size]) for i in range(0, len(workloads), size)]
        slots = asyncio.Semaphore(concurrency)

        async def one(chunk: list[Workload]) -> list[Decision]:
            async with slots:
                return await self._decide_chunk(chunk)

        results = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return [decision for chunk in results for decision in chunk]

    async def _decide_chunk(self, chunk: list[Workload]) -> list[Decision]:
        started = time.perf_counter()
        try:
            body = b'{"batch":[' + b",".join(encode_input(w.to_input()) for w in chunk) + b"]}"
            answer = await asyncio.wait_for(
                self.connection.query_encoded(BATCH_PACKAGE, BATCH_RULE, body), timeout=self.deadline)
        except TimeoutError:
            decisions = [self._timeout_denial() for _ in chunk]
        except UndefinedResult:  # a policy without the batch entry point
            return await self.decide_many(chunk)
        except PolicyEngineUnavailable as exc:
            decisions = [Decision.deny(
                ENGINE_UNAVAILABLE, f"The policy engine could not decide ({exc}), so the workload was not admitted.",
            ) for _ in chunk]
        except Exception as exc:
            log.exception("unexpected error asking OPA for a batch")
            decisions = [Decision.deny(
                ENGINE_UNAVAILABLE, f"The policy engine failed unexpectedly ({type(exc).__name__}).",
            ) for _ in chunk]
        else:
            decisions = [self._batch_item(answer, i) for i in range(len(chunk))]
        elapsed = time.perf_counter() - started
        for workload, decision in zip(chunk, decisions, strict=True):
            await self._tell(workload, decision, elapsed)
        return decisions

    @staticmethod
    def _batch_item(answer: Any, index: int) -> Decision:
        raw = answer.get(str(index)) if isinstance(answer, dict) else None
        if raw is None:
            return Decision.deny(ENGINE_UNAVAILABLE, "The policy engine gave no decision for this workload "
                                 "(undefined), so it was not admitted.")
        try:
            return Decision.from_opa(raw)
        except PolicyEngineUnavailable as exc:
            return Decision.deny(ENGINE_UNAVAILABLE, f"The policy engine gave an unusable answer: {exc}")

    async def revision(self) -> str:
        """The revision OPA has loaded, :data:`UNVERSIONED` when its policies carry none.

        Raises PolicyEngineUnavailable when OPA cannot be asked.
        """
        try:
            return str(await self.connection.get_data("jovial_guard_meta/revision"))
        except NoSuchData:
            return UNVERSIONED

    async def _decide(self, workload: Workload, input_json: bytes | None) -> Decision:
        try:
            encoded = input_json if input_json is not None else encode_input(workload.to_input())
            if getattr(self.connection, "in_process", False):
                # Evaluated synchronously, with the deadline enforced inside the evaluation:
                # a timer task around it would cost more than some decisions.
                raw = await self._query(encoded)
            else:
                raw = await asyncio.wait_for(self._query(encoded), timeout=self.deadline)
        except TimeoutError:
            return self._timeout_denial()
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

    async def _query(self, input_json: bytes) -> Any:
        return await self.connection.query_encoded(DECISION_PACKAGE, DECISION_RULE, input_json)
