"""One AdmissionReview in, one answer out: the webhook's decision logic, without HTTP.

``/mutate`` and ``/validate`` both ask the policy (through :class:`PolicyEngine`, so every
OPA failure is already a denial). On an allow:

* ``/mutate`` answers with the JSON Patch that hardens the pod (seccomp, non-root,
  read-only root + scratch volumes, capabilities, resources) and records what the hub and
  the node agent act on (:mod:`.records`: notebook, storage), re-rooted onto the workload
  object (``/spec/template/...`` for a Deployment);
* ``/validate`` (run by the API server after every mutation) additionally requires that the
  object needs no patch any more (``require_hardened``), so a pod that skipped or undid the
  mutation (another webhook, ``reinvocationPolicy``) is refused, not stored soft.

The OPA round trip runs under what is left of an internal deadline below the webhook's
``timeoutSeconds``: past it the answer is a denial (fail closed) rather than letting the
API server time out. The part before it (parse, normalize, cache lookup) is CPU-only and
bounded, so a cache hit never waits on anything.
Any unexpected exception is also a denial: this module can answer ``allowed: true`` only on
a decision OPA gave.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..decision import ENGINE_UNAVAILABLE, MALFORMED_INPUT, Decision
from ..errors import MalformedInput
from ..hardening.render_pod import render_pod_patch, reroot_patch
from ..normalize import POD_TEMPLATE_PATHS, workload_from_admission_review
from ..policy.client import encode_input
from ..policy.engine import PolicyEngine
from ..workload import Workload
from .annotations import decision_audit, with_request
from .cache import DecisionCache, RevisionTracker, input_key
from .labels import label_ops
from .namespaces import NamespaceLabels, NamespaceLabelsUnavailable
from .records import record_ops
from .review import (
    MalformedReview,
    bad_request_body,
    build_response,
    encode_patch,
    parse_review,
    request_kind,
)
from .update import classify, with_stored_object

log = logging.getLogger(__name__)

Mode = Literal["validate", "mutate"]
#: Rule id when /validate sees an object that still lacks required hardening.
NOT_HARDENED = "not-hardened"
#: Rule id when a kind without a pod template reaches the webhook.
UNSUPPORTED_KIND = "unsupported-kind"
#: The only part of a stored Pod's spec an UPDATE may patch.
EPHEMERAL_PREFIX = "/spec/ephemeralContainers/"
#: Label of an UPDATE admitted without a decision (only finalizers and the like changed).
METADATA_ONLY = "update-metadata-only"
#: Rule id for any bug or surprise inside the webhook (never an allow).
INTERNAL_ERROR = "webhook-internal-error"
#: Rule id when the namespace's labels (which may set enforcement modes) cannot be read.
NAMESPACE_UNAVAILABLE = "namespace-labels-unavailable"

#: Told once about each decision OPA made, for the first non-dryRun request it answers
#: (later cache hits repeat it): (workload, decision, mode, seconds). Must not raise.
DecisionLog = Callable[[Workload, Decision, str, float], Awaitable[None] | None]


@dataclass(frozen=True)
class HandlerResult:
    """HTTP status and JSON body, plus labels for metrics."""

    status: int
    body: dict[str, Any]
    outcome: str  # allowed | denied | malformed | error
    cache: str = "none"  # hit | miss | none
    rule: str = ""
    #: The strictest enforcement mode that acted (enforce, warn, audit, none).
    mode: str = "none"
    #: What was asked, for metrics and logs: filled from the request by ``handle``.
    operation: str = ""
    kind: str = ""
    namespace: str = ""
    dry_run: bool = False
    request_uid: str = ""
    decision_id: str = ""
    revision: str = ""
    #: (mode, rule id) of every violation that acted.
    violations: tuple[tuple[str, str], ...] = ()


@dataclass
class _Cached:
    decision: Decision
    patch_b64: str | None  # mutate: the patch; validate: None
    extra_reason: tuple[str, str] | None  # validate: (rule, message) when not hardened
    logged: bool = False  # told to the decision log for a real (not dryRun) request


@dataclass
class AdmissionSettings:
    """Knobs of the handler; every one has a safe default."""

    #: Seconds for the whole decision; keep it below the webhook's timeoutSeconds.
    deadline: float = 3.0
    #: /validate refuses objects that still need a hardening patch.
    require_hardened: bool = True
    #: Admit kinds without a pod template instead of denying them. Off by default: the
    #: shipped webhook configurations only route pod-template kinds, so anything else
    #: arriving means a misconfiguration, and we fail closed.
    allow_unsupported_kinds: bool = False
    #: HTTP status code used in ``status.code`` of policy denials.
    deny_code: int = 403
    extra_audit: dict[str, str] = field(default_factory=dict)


class AdmissionHandler:
    """Decide AdmissionReviews; see the module docstring for the contract."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        settings: AdmissionSettings | None = None,
        cache: DecisionCache[_Cached] | None = None,
        revisions: RevisionTracker | None = None,
        decision_log: DecisionLog | None = None,
        namespaces: NamespaceLabels | None = None,
    ) -> None:
        self.engine = engine
        self.namespaces = namespaces
        self.settings = settings or AdmissionSettings()
        if self.settings.deadline <= 0:
            raise ValueError("deadline must be positive seconds, e.g. 3.0")
        self.cache = cache
        self.revisions = revisions or RevisionTracker()
        self.decision_log = decision_log
        self._inflight: dict[Any, asyncio.Future[_Cached]] = {}
        if self.cache is not None:
            self.revisions.subscribe(self.cache.set_revision)

    async def handle(self, body: bytes, *, mode: Mode) -> HandlerResult:
        """Never raises; never allows without OPA's allow."""
        started = time.perf_counter()
        try:
            review, uid = parse_review(body)
        except MalformedReview as exc:
            return HandlerResult(400, bad_request_body(exc.problem), "malformed")
        except Exception as exc:  # noqa: BLE001 - a parser surprise is still a bad body
            return HandlerResult(400, bad_request_body(f"unreadable body: {type(exc).__name__}"), "malformed")
        try:
            result = await self._decide(review, uid, mode, started)
        except TimeoutError:
            result = self._deny(
                uid,
                Decision.deny(
                    ENGINE_UNAVAILABLE,
                    f"jovial-guard could not decide within its {self.settings.deadline:g}s deadline, "
                    "so the object was not admitted (fail closed). Try again.",
                ),
                code=503,
                outcome="error",
            )
        except NamespaceLabelsUnavailable as exc:
            log.warning("namespace labels unavailable: %s", exc)
            result = self._deny(
                uid,
                Decision.deny(
                    NAMESPACE_UNAVAILABLE,
                    "jovial-guard could not read this namespace's enforcement-mode labels, so the object "
                    "was not admitted (fail closed). Try again.",
                ),
                code=503,
                outcome="error",
            )
        except Exception:
            log.exception("admission handler failed")
            result = self._deny(
                uid,
                Decision.deny(INTERNAL_ERROR, "jovial-guard hit an internal error and refused the object (fail closed)."),
                code=500,
                outcome="error",
            )
        return with_request(result, review, uid)

    async def _decide(self, review: dict[str, Any], uid: str, mode: Mode, started: float) -> HandlerResult:
        kind = request_kind(review)
        obj = review["request"].get("object")
        obj_kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind is None or kind not in POD_TEMPLATE_PATHS or obj_kind not in (kind, None):
            if self.settings.allow_unsupported_kinds and kind is not None and obj_kind in (kind, None):
                return HandlerResult(
                    200,
                    build_response(uid, allowed=True, warnings=[f"jovial-guard does not decide kind {kind}"]),
                    "allowed",
                    rule=UNSUPPORTED_KIND,
                )
            return self._deny(
                uid,
                Decision.deny(
                    UNSUPPORTED_KIND,
                    f"jovial-guard decides only pods and pod-template kinds "
                    f"({', '.join(sorted(POD_TEMPLATE_PATHS))}); got request kind {kind!r}, object kind {obj_kind!r}.",
                ),
                code=400,
                outcome="denied",
            )
        try:
            workload = workload_from_admission_review(review)
        except MalformedInput as exc:
            return self._deny(uid, Decision.deny(MALFORMED_INPUT, f"The object cannot be decided: {exc}"), code=400, outcome="denied")
        update = classify(review["request"], workload)
        if update == "unchanged-metadata":
            # Like Pod Security: an update that touches neither the spec nor any label or
            # annotation (finalizers, ownerReferences, ...) is not re-decided.
            return HandlerResult(
                200,
                build_response(uid, allowed=True, audit_annotations={"update": "metadata-only", **self.settings.extra_audit}),
                "allowed",
                rule=METADATA_ONLY,
            )
        workload = with_stored_object(review["request"], workload, update)
        if self.namespaces is not None and workload.namespace:
            # The namespace's mode labels are part of the decision input (and of the cache
            # key); a fresh cached copy costs nothing, a read counts against the deadline.
            labels = self.namespaces.cached(workload.namespace)
            if labels is None:
                remaining = self.settings.deadline - (time.perf_counter() - started)
                if remaining <= 0:
                    raise TimeoutError
                labels = await asyncio.wait_for(self.namespaces.labels(workload.namespace), timeout=remaining)
            workload = dataclasses.replace(workload, namespace_labels=labels)

        # Fast path (CPU only, bounded): a cached answer for this workload and revision.
        revision = self.revisions.current
        # Encoded once: these bytes key the cache and are what OPA is asked about.
        input_json = encode_input(workload.to_input())
        key = (mode, input_key(input_json))
        cached = self.cache.get(key, revision=revision) if self.cache is not None else None
        cache_label = "hit" if cached is not None else ("miss" if self.cache is not None else "none")
        if cached is None:
            # Slow path: ask OPA, within what is left of the deadline (past it: deny).
            remaining = self.settings.deadline - (time.perf_counter() - started)
            if remaining <= 0:
                raise TimeoutError
            cached = await asyncio.wait_for(asyncio.shield(self._coalesced(key, workload, mode, input_json)), timeout=remaining)
        decision = cached.decision
        # The decision log hears each decision OPA made, once, for a real (not dryRun)
        # request; later cache hits repeat a decision already logged.
        if not workload.dry_run and not cached.logged and self.decision_log is not None:
            cached.logged = True
            try:
                result = self.decision_log(workload, decision, mode, time.perf_counter() - started)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("decision log failed")
        audit = {
            "policy-revision": decision.policy_revision,
            "decision-id": decision.decision_id,
            "decision-cache": cache_label,
            **decision_audit(decision),
            **self.settings.extra_audit,
        }
        if not decision.allowed:
            code = 503 if decision.reasons and decision.reasons[0].rule == ENGINE_UNAVAILABLE else self.settings.deny_code
            return self._deny(uid, decision, code=code, outcome="denied", audit=audit, cache=cache_label)
        if cached.extra_reason is not None:
            rule, message = cached.extra_reason
            audit["denied-by"] = rule
            body = build_response(uid, allowed=False, code=self.settings.deny_code,
                                  message=f"[{rule}] {message}", reason="Forbidden",
                                  warnings=decision.warnings, audit_annotations=audit)
            return _decided(decision, body, outcome="denied", cache=cache_label, rule=rule, mode="enforce")
        body = build_response(uid, allowed=True, patch_b64=cached.patch_b64,
                              warnings=decision.warnings, audit_annotations=audit)
        return _decided(decision, body, outcome="allowed", cache=cache_label)

    def _coalesced(self, key: Any, workload: Workload, mode: Mode, input_json: bytes) -> asyncio.Future[_Cached]:
        """One OPA question per distinct (endpoint, workload) in flight.

        A storm of identical requests (reinvocation, retries, a controller re-sending a
        template) waits on the first one's answer instead of queueing N copies at OPA.
        Each waiter still applies its own deadline.
        """
        # The revision is part of the key: after a policy change nobody joins a question
        # asked under the old policy.
        flight = (key, self.revisions.current)
        if (pending := self._inflight.get(flight)) is not None:
            return pending
        future: asyncio.Future[_Cached] = asyncio.ensure_future(self._ask(workload, mode, key, input_json))
        self._inflight[flight] = future
        future.add_done_callback(lambda _f: self._inflight.pop(flight, None))
        return future

    async def _ask(self, workload: Workload, mode: Mode, key: Any, input_json: bytes) -> _Cached:
        decision = await self.engine.decide(workload, input_json=input_json)
        cached = self._evaluate(workload, decision, mode)
        if not (decision.reasons and decision.reasons[0].rule == ENGINE_UNAVAILABLE):
            # Fail-closed denials are never cached: recovery must be immediate.
            self.revisions.observe(decision.policy_revision)
            if self.cache is not None:
                self.cache.put(key, cached, revision=decision.policy_revision)
        return cached

    def _evaluate(self, workload: Workload, decision: Decision, mode: Mode) -> _Cached:
        """What an allow means for this endpoint: the patch (mutate) or the hardening check."""
        if not decision.allowed or decision.spec is None:
            return _Cached(decision=decision, patch_b64=None, extra_reason=None)
        ops = render_pod_patch(workload.pod, decision.spec) + label_ops(workload.pod, decision.spec)
        ops += record_ops(workload.pod, decision.spec, ops)
        if workload.kind == "Pod" and workload.operation == "UPDATE":
            # A stored pod's spec is immutable except its ephemeral containers (kubectl
            # debug): a patch anywhere else would make every update (labels, finalizers)
            # fail. The new ephemeral containers are hardened; the policy still decides
            # the whole pod. Labels were rendered when the pod was created; the policy
            # refuses an update that introduces egress labels the hub's groups do not give.
            ops = [op for op in ops if op["path"].startswith(EPHEMERAL_PREFIX)]
        if mode == "mutate":
            rerooted = reroot_patch(ops, workload.pod_path)
            return _Cached(decision=decision, patch_b64=encode_patch(rerooted) if rerooted else None, extra_reason=None)
        if self.settings.require_hardened and ops:
            paths = sorted({(workload.pod_path + op["path"]) for op in ops})
            shown = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
            return _Cached(
                decision=decision,
                patch_b64=None,
                extra_reason=(
                    NOT_HARDENED,
                    f"The object lacks hardening the policy requires ({shown}); the jovial-guard "
                    "mutating webhook adds it, so it must run before this check.",
                ),
            )
        return _Cached(decision=decision, patch_b64=None, extra_reason=None)

    def _deny(
        self,
        uid: str,
        decision: Decision,
        *,
        code: int,
        outcome: str,
        audit: dict[str, str] | None = None,
        cache: str = "none",
    ) -> HandlerResult:
        annotations = audit or {"policy-revision": decision.policy_revision, "decision-id": decision.decision_id, **decision_audit(decision)}
        body = build_response(uid, allowed=False, code=code, message=decision.message(),
                              reason="Forbidden" if code == 403 else None,
                              warnings=decision.warnings, audit_annotations=annotations)
        return _decided(decision, body, outcome=outcome, cache=cache,
                        rule=decision.reasons[0].rule if decision.reasons else "")


def _decided(decision: Decision, body: dict[str, Any], *, outcome: str, cache: str = "none",
             rule: str = "", mode: str | None = None) -> HandlerResult:
    """An answer that came from a decision: its id, revision, mode and violations label the
    metrics and logs whatever the answer says."""
    return HandlerResult(
        status=200,
        body=body,
        outcome=outcome,
        cache=cache,
        rule=rule,
        mode=decision.mode if mode is None else mode,
        decision_id=decision.decision_id,
        revision=decision.policy_revision,
        violations=tuple((m, r.rule) for m, r in decision.violations()),
    )
