"""The HTTPS webhook server (aiohttp): routes, background tasks, worker processes.

Routes: ``POST /validate``, ``POST /mutate`` (AdmissionReview v1), ``GET /healthz``
(the process answers), ``GET /readyz`` (OPA answers with the expected policy revision),
``GET /metrics`` (Prometheus). HTTPS only: there is no plain-HTTP listener at all.

Workers: ``workers > 1`` forks that many processes, each binding the port with
``SO_REUSEPORT`` so the kernel spreads connections; each has its own OPA connection pool,
decision cache and revision poller (all invalidate on the same revision change).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from ..documents import BOUNDS
from ..errors import PolicyEngineUnavailable
from ..policy.client import OpaConnection, OpaEndpoint
from ..policy.engine import UNVERSIONED, UNVERSIONED_HELP, DecisionSource, PolicyEngine
from ..policy.wasm_bundle import PolicyArtifact
from ..policy.wasm_engine import BundleWatcher, WasmConnection, followed_bundle
from .cache import DecisionCache, RevisionTracker
from .handler import AdmissionHandler, AdmissionSettings, DecisionLog, Mode
from .metrics import WebhookMetrics
from .namespaces import NamespaceLabels, kubernetes_reader
from .review import bad_request_body, dump_json
from .tls import ReloadingTLS

log = logging.getLogger(__name__)

#: Largest body accepted: the API server caps objects at ~1.5 MiB; a review may carry
#: object and oldObject. The shared parser's bound, so the webhook and check agree.
MAX_BODY = BOUNDS.max_body_bytes


@dataclass
class WebhookConfig:
    """Everything ``jovial-guard webhook serve`` takes; safe defaults."""

    opa_url: str
    cert: Path
    key: Path
    host: str = "0.0.0.0"
    port: int = 8443
    opa_token: str | None = None
    opa_ca: str | None = None
    #: Whole-request deadline; keep below the webhook configuration's timeoutSeconds (5).
    deadline: float = 3.0
    #: Deadline of one OPA query (inside ``deadline``).
    engine_deadline: float = 2.5
    cache_entries: int = 10_000
    cache_ttl: float = 300.0
    #: 0 disables the decision cache.
    cache_enabled: bool = True
    #: How often OPA's policy revision is polled (cache invalidation latency bound).
    revision_interval: float = 1.0
    expected_revision: str | None = None
    workers: int = 1
    require_hardened: bool = True
    allow_unsupported_kinds: bool = False
    cert_check_interval: float = 1.0
    #: JSON-lines decision log (jovial_guard.policy.decision_log) of /mutate decisions;
    #: with several workers each writes PATH.<pid> (the log's rotation is per process).
    decision_log_path: Path | None = None
    #: Read each namespace's enforcement-mode labels through the API server (in-cluster
    #: credentials, or ``kubeconfig``), cached for ``namespace_labels_ttl`` seconds. Off:
    #: only the modes in the policy data apply.
    namespace_labels: bool = False
    kubeconfig: str | None = None
    namespace_labels_ttl: float = 10.0
    #: ``opa``: ask the OPA at ``opa_url``. ``wasm``: evaluate the compiled policy of the
    #: signed bundle at ``bundle`` (a path or the bundle service's URL) in each worker,
    #: verified with ``bundle_public_key`` and ``bundle_key_id`` (the sidecar's key).
    engine: str = "opa"
    bundle: str | None = None
    bundle_public_key: Path | None = None
    bundle_key_id: str | None = None
    #: ``wasm`` without signed bundles: the policy directory the OPA sidecar loads, compiled
    #: once by :func:`serve` before the workers fork (``compiled``); its revision is the
    #: directory's, the one ``expected_revision`` names.
    policy_dir: Path | None = None
    compiled: PolicyArtifact | None = None


def log_decision(endpoint: str, result: Any) -> None:
    """One JSON log line per answered review: INFO when a rule acted or the answer was
    not an allow, DEBUG for a clean allow (the common case, kept out of default logs)."""
    level = logging.DEBUG if result.outcome == "allowed" and result.mode == "none" else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "admission %s %s %s/%s: %s",
        endpoint,
        result.operation,
        result.namespace,
        result.kind,
        result.outcome,
        extra={
            "fields": {
                "event": "admission",
                "endpoint": endpoint,
                "request_uid": result.request_uid,
                "decision_id": result.decision_id,
                "revision": result.revision,
                "operation": result.operation,
                "kind": result.kind,
                "namespace": result.namespace,
                "dry_run": result.dry_run,
                "mode": result.mode,
                "outcome": result.outcome,
                "rule": result.rule,
                "violations": [{"mode": m, "rule": r} for m, r in result.violations],
                "cache": result.cache,
            }
        },
    )


def mutate_decision_log(path: Path, *, per_process: bool) -> DecisionLog:
    """The project's decision log, fed with /mutate decisions: those are decided on the
    object as it was submitted, so ``jovial-guard policy dry-run`` replays what users asked
    for (the /validate call re-decides the already patched object)."""
    from ..policy.decision_log import DecisionLog as PolicyDecisionLog

    log_file = PolicyDecisionLog(path.with_name(f"{path.name}.{os.getpid()}") if per_process else path)

    def record(workload: Any, decision: Any, mode: str, seconds: float) -> None:
        if mode == "mutate":
            log_file.record(workload, decision, seconds)

    return record


class WebhookServer:
    """One worker's application: engine, handler, cache, metrics, TLS."""

    def __init__(self, config: WebhookConfig, *, decision_log: DecisionLog | None = None) -> None:
        if config.engine_deadline >= config.deadline:
            raise ValueError("engine_deadline must be below deadline, e.g. 2.5 < 3.0")
        self.config = config
        self.metrics = WebhookMetrics()
        self.revisions = RevisionTracker(expected=config.expected_revision)
        self.cache: DecisionCache[Any] | None = (
            DecisionCache(max_entries=config.cache_entries, ttl=config.cache_ttl) if config.cache_enabled else None
        )
        self.tls = ReloadingTLS(config.cert, config.key, check_interval=config.cert_check_interval)
        if decision_log is None and config.decision_log_path is not None:
            decision_log = mutate_decision_log(config.decision_log_path, per_process=config.workers > 1)
        self.decision_log = decision_log
        self.connection: DecisionSource | None = None
        self.bundles: BundleWatcher | None = None
        self.engine: PolicyEngine | None = None
        self.handler: AdmissionHandler | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def _decision_source(self, stack: AsyncExitStack) -> DecisionSource:
        """The OPA connection, the policy directory compiled by :func:`serve`, or the compiled
        policy of the first verified bundle."""
        config = self.config
        if config.engine == "wasm" and config.compiled is not None:
            return WasmConnection.from_artifact(config.compiled, deadline=config.engine_deadline)
        if config.engine == "wasm":
            if not (config.bundle and config.bundle_public_key and config.bundle_key_id):
                raise ValueError("engine wasm needs bundle, bundle_public_key and bundle_key_id")
            connection, self.bundles = followed_bundle(config.bundle, public_key=config.bundle_public_key,
                                                       key_id=config.bundle_key_id, deadline=config.engine_deadline)
            await self.bundles.refresh()
            return connection
        endpoint = OpaEndpoint(config.opa_url, token=config.opa_token, ca_file=config.opa_ca)
        return await stack.enter_async_context(OpaConnection(endpoint, timeout=config.engine_deadline))

    async def _context(self, app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            connection = await self._decision_source(stack)
            self.connection = connection
            self.engine = PolicyEngine(connection, deadline=self.config.engine_deadline)
            self.handler = AdmissionHandler(
                self.engine,
                settings=AdmissionSettings(
                    deadline=self.config.deadline,
                    require_hardened=self.config.require_hardened,
                    allow_unsupported_kinds=self.config.allow_unsupported_kinds,
                ),
                cache=self.cache,
                revisions=self.revisions,
                decision_log=self.decision_log,
                namespaces=(
                    NamespaceLabels(kubernetes_reader(self.config.kubeconfig), ttl=self.config.namespace_labels_ttl)
                    if self.config.namespace_labels
                    else None
                ),
            )
            await self.poll_revision_once()
            poller = asyncio.create_task(self._poll_revisions())
            try:
                yield
            finally:
                poller.cancel()
                try:
                    await poller
                except asyncio.CancelledError:
                    pass

    async def poll_revision_once(self) -> None:
        if self.engine is None:
            return
        if self.bundles is not None:
            await self.bundles.refresh()
        try:
            revision = await asyncio.wait_for(self.engine.revision(), timeout=self.config.engine_deadline)
        except (TimeoutError, PolicyEngineUnavailable) as exc:
            self.revisions.observe(None, error=str(exc) or type(exc).__name__)
        else:
            if revision == UNVERSIONED and self.revisions.current != UNVERSIONED:
                log.warning("policy revision: %s", UNVERSIONED_HELP)
            self.revisions.observe(revision)
        ready, _ = self.revisions.ready(max_age=self._max_age)
        self.metrics.ready.set(1 if ready else 0)
        self.metrics.set_revision(self.revisions.current)

    @property
    def _max_age(self) -> float:
        return 3 * self.config.revision_interval + self.config.engine_deadline

    async def _poll_revisions(self) -> None:
        while True:
            await asyncio.sleep(self.config.revision_interval)
            await self.poll_revision_once()

    # -- routes ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.cleanup_ctx.append(self._context)
        app.router.add_post("/validate", self._review_route("validate"))
        app.router.add_post("/mutate", self._review_route("mutate"))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    def _review_route(self, mode: Mode) -> Any:
        async def route(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                self.metrics.requests.labels(mode, "unknown", "unknown", "", "none", "malformed", "false").inc()
                return web.json_response(bad_request_body(f"body larger than {MAX_BODY} bytes"), status=413)
            if self.handler is None:  # pragma: no cover - only before startup finished
                return web.json_response(bad_request_body("webhook is starting"), status=503)
            result = await self.handler.handle(body, mode=mode)
            self.metrics.observe_request(mode, result)
            log_decision(mode, result)
            if result.cache != "none":
                self.metrics.cache.labels(result.cache).inc()
            if result.outcome in ("denied", "error") and result.rule:
                self.metrics.denials.labels(result.rule).inc()
            self.metrics.latency.labels(mode).observe(time.perf_counter() - started)
            return web.Response(body=dump_json(result.body), status=result.status, content_type="application/json")

        return route

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, why = self.revisions.ready(max_age=self._max_age)
        self.metrics.ready.set(1 if ready else 0)
        return web.Response(text=why + "\n", status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")


async def run_worker(config: WebhookConfig, *, reuse_port: bool = False, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT)."""
    server = WebhookServer(config)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, ssl_context=server.tls.context, reuse_port=reuse_port, backlog=1024
    )
    await site.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    log.info("jovial-guard webhook (pid %d) serving https://%s:%d", os.getpid(), config.host, config.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _event_loop_policy() -> None:
    """uvloop when installed: a faster loop, same semantics."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: WebhookConfig) -> int:
    """Run the webhook in the foreground: one process, or a pre-fork of ``workers``."""
    if config.workers < 1:
        raise ValueError("workers must be at least 1")
    if config.engine == "wasm" and config.policy_dir is not None and config.compiled is None:
        from ..policy.opa_process import policy_revision
        from ..policy.wasm_bundle import compile_directory

        compiled = compile_directory(config.policy_dir, policy_revision(config.policy_dir))
        config = replace(config, compiled=compiled)
        log.info("policy directory %s: revision %s compiled", config.policy_dir, compiled.revision)
    _event_loop_policy()
    if config.workers == 1:
        asyncio.run(run_worker(config))
        return 0
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("several workers need SO_REUSEPORT (Linux)")
    # The workers' metrics files live in a shared directory; one we make is ours to remove.
    made_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="jovial-guard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    try:
        return _fork_workers(config)
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _fork_workers(config: WebhookConfig) -> int:
    """Fork ``config.workers`` workers sharing the port; wait for all; 1 if one failed."""
    children: list[int] = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                asyncio.run(run_worker(config, reuse_port=True))
            except BaseException:
                log.exception("webhook worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    remaining = set(children)
    while remaining:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover
            continue
        remaining.discard(pid)
        if code != 0 and remaining:
            # One worker died: stop the rest so the orchestrator restarts us whole.
            status = 1
            forward(signal.SIGTERM, None)
    print(f"jovial-guard webhook: {len(children)} workers stopped", file=sys.stderr)
    return status
