"""The intake HTTP endpoint (aiohttp): Falco http_output, falcosidekick, bulk NDJSON, hub
events, policy decisions, and Prometheus metrics.

Routes (all POST bodies JSON unless noted):
- ``POST /falco`` (and ``POST /``): one Falco alert, as Falco's ``http_output`` sends it, or
  falcosidekick's webhook / CloudEvents forward.
- ``POST /bulk``: NDJSON, any mix of accepted forms; one group commit for the batch.
- ``POST /engine``, ``POST /hub``, ``POST /decision``, ``POST /attestation``: one engine
  event, JupyterHub server-action event, policy decision, or a node agent's attestation.
- ``GET /metrics``, ``GET /healthz``.

A 200 means the event is on disk. A malformed event gets a 400 after it has been
quarantined; a failed write gets a 503 (the sender should retry). An optional bearer token
protects the POST routes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..attest.report import intake_event as attestation_intake
from .errors import AuditWriteFailed
from .events import MalformedEvent, decision_event, engine_event, falco_event, hub_event
from .log import iso_now
from .metrics import CONTENT_TYPE_LATEST
from .prepare import prepare_in_worker, prepare_lines
from .service import AuditService

log = logging.getLogger(__name__)
SERVICE_KEY: web.AppKey[AuditService] = web.AppKey("audit_service", AuditService)
MAX_BODY = 64 * 1024 * 1024
#: Bulk bodies with at least this many lines are prepared in worker processes.
BULK_POOL_MIN_LINES = 256
BULK_CHUNK_BYTES = 512 * 1024


def split_lines(data: bytes, size: int) -> list[bytes]:
    """Cut ``data`` into pieces of about ``size`` bytes, only at newlines."""
    pieces = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + size)
        end = len(data) if end < 0 else end + 1
        pieces.append(data[start:end])
        start = end
    return pieces

Normalizer = Callable[[Any], "dict[str, Any] | None"]


def _json_response(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def make_app(service: AuditService, *, token: str | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    metrics = service.metrics

    def authorized(request: web.Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def single(endpoint: str, normalize: Normalizer) -> Callable[[web.Request], Awaitable[web.Response]]:
        histogram = metrics.intake_seconds.labels(endpoint)

        async def handler(request: web.Request) -> web.Response:
            started = time.perf_counter()
            if not authorized(request):
                return _json_response({"error": "missing or wrong bearer token"}, 401)
            raw = await request.read()
            event: dict[str, Any] | None
            try:
                doc = orjson.loads(raw)
                if endpoint == "falco" and "ce-type" in request.headers:
                    if request.headers["ce-type"] != "falco.rule.output.v1":
                        raise MalformedEvent("CloudEvent type is not falco.rule.output.v1")
                    event = falco_event(doc, source="falcosidekick-cloudevents", raw=raw)
                elif endpoint == "falco":
                    event = falco_event(doc, raw=raw)
                else:
                    event = normalize(doc)
            except (orjson.JSONDecodeError, MalformedEvent) as exc:
                reason = f"invalid JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
                try:
                    await service.quarantine([(raw, reason)], endpoint=endpoint)
                except AuditWriteFailed:
                    return _json_response({"error": "could not store the malformed event"}, AuditWriteFailed.http_status)
                return _json_response({"error": reason, "quarantined": True}, MalformedEvent.http_status)
            if event is None:
                return _json_response({"ignored": True})
            try:
                seq = await service.record(event)
            except AuditWriteFailed:
                return _json_response({"error": "audit log write failed; retry"}, AuditWriteFailed.http_status)
            histogram.observe(time.perf_counter() - started)
            return _json_response({"seq": seq})

        return handler

    async def bulk(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if not authorized(request):
            return _json_response({"error": "missing or wrong bearer token"}, 401)
        raw = await request.read()
        ts = iso_now(service.clock())
        pool = service.bulk_pool() if raw.count(b"\n") >= BULK_POOL_MIN_LINES else None
        want_events = bool(service.observers)
        if pool is None:
            parts = [prepare_lines(raw, ts, service.attributor, want_events=want_events)]
        else:
            loop = asyncio.get_running_loop()
            try:
                parts = await asyncio.gather(*(loop.run_in_executor(pool, prepare_in_worker, chunk, ts, want_events)
                                               for chunk in split_lines(raw, BULK_CHUNK_BYTES)))
            except Exception:  # a broken worker pool must not lose the batch
                log.exception("bulk workers failed; preparing this batch in the event loop")
                service.reset_bulk_pool()
                parts = [prepare_lines(raw, ts, service.attributor, want_events=want_events)]
        bodies = [b for p in parts for b in p.bodies]
        leaves = [leaf for p in parts for leaf in p.leaves]
        events = [e for p in parts for e in p.events]  # decisions, and all events if observed
        bad = [q for p in parts for q in p.quarantined]
        ignored = sum(p.ignored for p in parts)
        try:
            if bad:
                await service.quarantine(bad, endpoint="bulk")
            first = await service.record_prepared(bodies, leaves, events)
            for part in parts:
                for (kind, rule, priority, user), count in part.counts.items():
                    metrics.event(kind, rule, priority, user, count)
        except AuditWriteFailed:
            return _json_response({"error": "audit log write failed; retry the batch"},
                                  AuditWriteFailed.http_status)
        metrics.intake_seconds.labels("bulk").observe(time.perf_counter() - started)
        return _json_response({"accepted": len(bodies), "first_seq": first if bodies else None,
                               "quarantined": len(bad), "ignored": ignored})

    async def metrics_handler(request: web.Request) -> web.Response:
        metrics.records.set(service.log.size)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return _json_response({"ok": True, "records": service.log.size})

    falco = single("falco", falco_event)
    app.router.add_post("/", falco)
    app.router.add_post("/falco", falco)
    app.router.add_post("/engine", single("engine", engine_event))
    app.router.add_post("/hub", single("hub", hub_event))
    app.router.add_post("/decision", single("decision", decision_event))
    app.router.add_post("/attestation", single("attestation", attestation_intake))
    app.router.add_post("/bulk", bulk)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    return app
