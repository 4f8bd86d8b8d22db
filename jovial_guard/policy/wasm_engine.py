"""Decisions from OPA's compiled policy in this process: the ``wasm`` policy engine.

:class:`WasmConnection` answers the two calls :class:`~.engine.PolicyEngine` makes of an
OPA connection (``query_encoded``, ``get_data``) from a :class:`~.wasm_runtime.CompiledPolicy`,
so everything the engine does around them stays as it is: the deadline, fail-closed denials
(any evaluation failure is a :class:`~jovial_guard.errors.PolicyEngineUnavailable`, an
undefined decision an :class:`~.client.UndefinedResult`), decision listeners, and the
revision every decision carries (``data.jovial_guard_meta.revision`` of the loaded bundle).

:class:`BundleWatcher` keeps the connection on the newest signed bundle from a file or the
bundle service: fetched, verified with the sidecar's key and key id, compiled, then swapped
in whole; a bundle that fails any step is refused and the previous one keeps deciding. The
revision change reaches the webhook's revision tracker, which drops its decision cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import PolicyEngineUnavailable
from .client import NoSuchData, UndefinedResult, encode_input
from .wasm_bundle import PolicyArtifact
from .wasm_runtime import UNDEFINED, CompiledPolicy, WasmEvalError
from .worker_status import WorkerStatus, status_url

log = logging.getLogger(__name__)

REVISION_PATH = "jovial_guard_meta/revision"


class WasmConnection:
    """An in-process stand-in for :class:`~.client.OpaConnection` (decisions and revision)."""

    #: Evaluations run synchronously and enforce their own deadline (wasmtime epochs).
    in_process = True

    def __init__(self, *, deadline: float = 2.0) -> None:
        self.deadline = deadline
        self._policy: CompiledPolicy | None = None
        self.revision: str | None = None

    @classmethod
    def from_artifact(cls, artifact: PolicyArtifact, *, deadline: float = 2.0) -> WasmConnection:
        connection = cls(deadline=deadline)
        connection.install(artifact)
        return connection

    def install(self, artifact: PolicyArtifact) -> None:
        """Compile ``artifact`` and make it the policy every later decision uses."""
        try:
            policy = CompiledPolicy(artifact.wasm, artifact.data_json, deadline=self.deadline)
        except WasmEvalError as exc:
            raise PolicyEngineUnavailable(f"the compiled policy of revision {artifact.revision} is unusable: {exc}") \
                from exc
        self._policy, self.revision = policy, artifact.revision

    async def __aenter__(self) -> WasmConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release: the module lives as long as the process."""

    def decide_encoded(self, package_path: str, rule: str, input_json: bytes) -> Any:
        """Synchronous :meth:`query_encoded` (for callers outside an event loop)."""
        policy = self._policy
        if policy is None:
            raise PolicyEngineUnavailable("no verified policy bundle is loaded yet")
        entrypoint = f"{package_path.replace('.', '/')}/{rule}"
        if entrypoint not in policy.entrypoints:
            raise UndefinedResult(f"the compiled policy has no entry point data.{package_path}.{rule}")
        try:
            value = policy.evaluate(entrypoint, input_json)
        except WasmEvalError as exc:
            raise PolicyEngineUnavailable(f"the compiled policy failed: {exc}") from exc
        if value is UNDEFINED:
            raise UndefinedResult(f"the compiled policy returned no result for data.{package_path}.{rule} (undefined)")
        return value

    async def query_encoded(self, package_path: str, rule: str, input_json: bytes) -> Any:
        return self.decide_encoded(package_path, rule, input_json)

    async def query(self, package_path: str, rule: str, input_doc: dict[str, Any]) -> Any:
        return self.decide_encoded(package_path, rule, encode_input(input_doc))

    async def get_data(self, path: str) -> Any:
        """Only the revision is readable (the one data document the engine asks for)."""
        if self._policy is None:
            raise PolicyEngineUnavailable("no verified policy bundle is loaded yet")
        if path != REVISION_PATH or self.revision is None:
            raise NoSuchData(f"the compiled policy has no data at {path}")
        return self.revision

    async def healthy(self) -> bool:
        return self._policy is not None


class BundleWatcher:
    """Load the signed bundle at ``source`` (a path, or an http(s) URL of the bundle
    service) into ``connection`` whenever its bytes change."""

    def __init__(self, connection: WasmConnection, source: str, *, public_key: Path, key_id: str,
                 timeout: float = 10.0, status: WorkerStatus | None = None) -> None:
        self.connection = connection
        self.source = source
        self.public_key = public_key
        self.key_id = key_id
        self.timeout = timeout
        #: Where this worker reports its revision after every refresh (the bundle service).
        self.status = status
        self._digest: str | None = None
        self._etag: str | None = None
        self.last_error: str | None = None

    async def _fetch(self) -> bytes | None:
        """The bundle's bytes, or None when the source says it has not changed."""
        if not self.source.startswith(("http://", "https://")):
            return await asyncio.to_thread(Path(self.source).read_bytes)
        headers = {"If-None-Match": self._etag} if self._etag else {}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(self.source, headers=headers) as response:
            if response.status == 304:
                return None
            if response.status != 200:
                raise PolicyEngineUnavailable(f"the bundle service answered HTTP {response.status}")
            self._etag = response.headers.get("ETag")
            return await response.read()

    def _load(self, blob: bytes) -> PolicyArtifact:
        from .wasm_bundle import load_verified

        return load_verified(blob, public_key=self.public_key, key_id=self.key_id)

    async def refresh(self) -> bool:
        """Fetch, verify, compile, swap; True when a new revision was installed. Failures
        are logged and leave the current policy in place. Then the worker's state goes to
        :attr:`status`, if any."""
        installed = await self._refresh()
        if self.status is not None:
            await self.status.report(self.connection.revision or "", self.last_error or "")
        return installed

    async def _refresh(self) -> bool:
        try:
            blob = await self._fetch()
            if blob is None:
                return False
            digest = hashlib.sha256(blob).hexdigest()
            if digest == self._digest:
                return False
            artifact = await asyncio.to_thread(self._load, blob)
            await asyncio.to_thread(self.connection.install, artifact)
        except Exception as exc:  # noqa: BLE001 - every failure keeps the previous policy
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.error("policy bundle %s refused, keeping revision %s: %s", self.source,
                          self.connection.revision or "(none)", message)
            self.last_error = message
            return False
        self._digest, self.last_error = digest, None
        log.info("policy bundle %s: revision %s installed", self.source, artifact.revision)
        return True

    async def follow(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; a failed look is logged and
        the next one made, so one surprise never leaves the process on an old revision."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # keep following; the current policy stays
                log.exception("policy bundle %s: looking for a new revision failed", self.source)


def followed_bundle(source: str, *, public_key: Path, key_id: str, deadline: float,
                    instance: str | None = None) -> tuple[WasmConnection, BundleWatcher]:
    """An empty :class:`WasmConnection` and the :class:`BundleWatcher` that fills it from
    ``source``, reporting as ``instance`` (``POD/PID`` by default) to the bundle service
    when ``source`` is one. Nothing is fetched until the watcher's first refresh."""
    connection = WasmConnection(deadline=deadline)
    report_to = status_url(source)
    status = WorkerStatus(report_to, instance=instance) if report_to else None
    return connection, BundleWatcher(connection, source, public_key=public_key, key_id=key_id, status=status)
