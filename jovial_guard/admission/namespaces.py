"""The labels of a request's namespace, which may set enforcement modes (like PSA's).

An AdmissionReview does not carry its namespace's labels, so the webhook reads them
through the API server (``get`` on namespaces) and keeps each for a short TTL: a label
change takes effect within ``ttl`` seconds, and a storm of pod creations in one namespace
costs one read. Only the mode labels are kept (``jovial-guard.io/mode`` and
``mode.jovial-guard.io/*``), so other label churn neither reaches the policy nor changes
decision cache keys.

A failed read raises :class:`NamespaceLabelsUnavailable`; the handler then denies (fail
closed): the namespace might have asked for a stricter mode than the policy data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: Label keys the policy's enforcement package reads.
MODE_LABEL = "jovial-guard.io/mode"
MODE_LABEL_PREFIX = "mode.jovial-guard.io/"

#: Reads one namespace's labels (raises on any failure).
Reader = Callable[[str], Awaitable[dict[str, str]]]


class NamespaceLabelsUnavailable(Exception):
    """The namespace's labels could not be read; the request cannot be decided."""


def mode_labels(labels: Any) -> dict[str, str]:
    """Only the labels that set enforcement modes, as strings."""
    if not isinstance(labels, dict):
        return {}
    return {
        str(k): str(v)
        for k, v in labels.items()
        if isinstance(k, str) and (k == MODE_LABEL or k.startswith(MODE_LABEL_PREFIX))
    }


class NamespaceLabels:
    """A TTL cache in front of a namespace reader, with one read in flight per namespace."""

    def __init__(self, reader: Reader, *, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive seconds, e.g. 10.0")
        self._reader = reader
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, dict[str, str]]] = {}
        self._inflight: dict[str, asyncio.Future[dict[str, str]]] = {}

    def cached(self, namespace: str) -> dict[str, str] | None:
        """The labels if known and fresh (CPU only)."""
        entry = self._entries.get(namespace)
        if entry is not None and self._clock() - entry[0] < self._ttl:
            return entry[1]
        return None

    async def labels(self, namespace: str) -> dict[str, str]:
        """The namespace's mode labels; NamespaceLabelsUnavailable when they cannot be read."""
        if not namespace:
            return {}
        if (fresh := self.cached(namespace)) is not None:
            return fresh
        pending = self._inflight.get(namespace)
        if pending is None:
            pending = asyncio.ensure_future(self._read(namespace))
            self._inflight[namespace] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(namespace, None))
        return await asyncio.shield(pending)

    async def _read(self, namespace: str) -> dict[str, str]:
        try:
            labels = mode_labels(await self._reader(namespace))
        except Exception as exc:
            raise NamespaceLabelsUnavailable(f"cannot read the labels of namespace {namespace!r}: {type(exc).__name__}") from exc
        self._entries[namespace] = (self._clock(), labels)
        return labels


def kubernetes_reader(kubeconfig: str | None = None) -> Reader:
    """A reader through the API server: in-cluster credentials, or ``kubeconfig`` if given."""
    from kubernetes_asyncio import client, config

    state: dict[str, Any] = {}

    async def read(namespace: str) -> dict[str, str]:
        if "api" not in state:
            cfg = client.Configuration()
            if kubeconfig:
                await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            state["api"] = client.CoreV1Api(client.ApiClient(configuration=cfg))
        ns = await state["api"].read_namespace(namespace, _request_timeout=2)
        return dict(ns.metadata.labels or {})

    return read
