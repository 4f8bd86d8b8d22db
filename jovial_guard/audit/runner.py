"""Assemble and run the audit service (what ``jovial-guard audit serve`` does), reusable
from tests and the embedded stack."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..constants import DOCKER_API_VERSION
from .attest_loop import AttestationLoop, Locator, docker_locator
from .checkpoint import load_or_create_key
from .registry import SpawnRegistry
from .responses import (
    Action,
    CutNetworkAction,
    HubStopServerAction,
    NotifyAction,
    Responder,
    ResponseConfig,
    RevokeStorageAction,
    load_rules,
)
from .server import make_app
from .service import AuditService
from .sources import EngineEventsFile, EngineEventStream

log = logging.getLogger(__name__)


@dataclass
class AuditSettings:
    directory: Path
    key_path: Path | None = None
    registry_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    rules_path: Path | None = None
    dry_run: bool | None = None
    hub_api_url: str | None = None
    hub_token: str | None = None
    credentials_state: Path | None = None
    credentials_keys: Path | None = None
    engine_url: str | None = None
    engine_events_file: Path | None = None
    #: Socket of the seccomp agent (None: no agent; audited profiles cannot start).
    seccomp_socket: Path | None = None
    max_file_bytes: int = 64 * 1024 * 1024
    checkpoint_every: int = 10_000
    checkpoint_interval: float = 1.0
    #: Processes preparing large bulk bodies (0: prepare in the event loop).
    bulk_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    extra_actions: dict[str, Action] = field(default_factory=dict)
    #: Seconds between attestation passes (0: off; ``audit serve`` defaults to 5). Needs
    #: ``engine_url`` or ``attest_locator``.
    attest_interval: float = 0.0
    #: Finds a server's container (default: the engine at ``engine_url``).
    attest_locator: Locator | None = None

    def key_file(self) -> Path:
        return self.key_path or self.directory / "keys" / "signing.key"


class DirectoryRevoker:
    """Revokes through the credentials state on disk, opening the issuer at each use.

    Why lazily: the audit service usually starts before the hub has issued its first grant
    (and so before the keyring exists); a revocation must still work once there is
    something to revoke, and fail visibly (an audited ``failed`` action) before.
    """

    def __init__(self, state_dir: Path, *, key_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.key_dir = key_dir

    def revoke(self, *, user: str | None = None, serial: str | None = None, reason: str) -> list[str]:
        from ..credentials import revoke

        key_dir = self.key_dir or self.state_dir.parent / "keys"
        return revoke(user=user, serial=serial, reason=reason, state_dir=self.state_dir, key_dir=key_dir)


class RunningAudit:
    """A started service + HTTP site; ``await stop()`` flushes and signs a final checkpoint."""

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        s = settings
        self.registry = SpawnRegistry(s.registry_path or s.directory / "spawns.sqlite")
        self.service = AuditService(
            s.directory, key=load_or_create_key(s.key_file()), registry=self.registry,
            max_file_bytes=s.max_file_bytes, checkpoint_every=s.checkpoint_every,
            checkpoint_interval=s.checkpoint_interval, bulk_workers=s.bulk_workers,
        )
        self.responder: Responder | None = None
        self.sources: list[Any] = []
        self.attestation: AttestationLoop | None = None
        self._docker: Any = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _actions(self, config: ResponseConfig) -> dict[str, Action]:
        s = self.settings
        actions: dict[str, Action] = {"notify": NotifyAction(config.notify_webhook)}
        if s.hub_api_url and s.hub_token:
            actions["stop_server"] = HubStopServerAction(s.hub_api_url, s.hub_token)
        if s.credentials_state is not None:
            actions["revoke_storage"] = RevokeStorageAction(
                DirectoryRevoker(s.credentials_state, key_dir=s.credentials_keys))
        docker_client = self._engine()
        from .netcut import NftNetworkCutter

        actions["cut_network"] = CutNetworkAction(NftNetworkCutter(self.registry, docker_client=docker_client))
        actions.update(s.extra_actions)
        return actions

    def _engine(self) -> Any:
        """One Docker-API client for the engine (responses and attestation), if configured."""
        if self._docker is None and self.settings.engine_url:
            import docker

            self._docker = docker.DockerClient(base_url=self.settings.engine_url, version=DOCKER_API_VERSION)
        return self._docker

    def _start_attestation(self) -> None:
        s = self.settings
        locate = s.attest_locator or (docker_locator(self._engine()) if s.engine_url else None)
        if s.attest_interval <= 0 or locate is None:
            return
        self.attestation = AttestationLoop(self.service, self.registry, locate=locate,
                                           interval=s.attest_interval, status_dir=s.directory)
        self.service.observers.append(self.attestation)
        self.attestation.start()

    async def start(self) -> RunningAudit:
        s = self.settings
        await self.service.start()
        if s.rules_path is not None:
            config = load_rules(s.rules_path)
            if s.dry_run is not None:
                config = ResponseConfig(rules=config.rules, dry_run=s.dry_run, max_responses=config.max_responses,
                                        per_seconds=config.per_seconds, notify_webhook=config.notify_webhook)
            self.responder = Responder(config, self._actions(config), self.service.record)
            self.service.observers.append(self.responder)
        if s.hub_api_url and s.hub_token:
            from .hub_registry import HubRegistrar

            self.service.observers.append(HubRegistrar(self.registry, api_url=s.hub_api_url, token=s.hub_token))
        if s.engine_url:
            stream = EngineEventStream(self.service, s.engine_url)
            stream.start()
            self.sources.append(stream)
        if s.engine_events_file:
            follower = EngineEventsFile(self.service, s.engine_events_file)
            follower.start()
            self.sources.append(follower)
        if s.seccomp_socket is not None:
            from .seccomp_agent import SeccompAgent

            agent = SeccompAgent(self.service, s.seccomp_socket, engine_url=s.engine_url)
            agent.start()
            self.sources.append(agent)
        self._start_attestation()
        self._runner = web.AppRunner(make_app(self.service, token=s.token), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1] if self._runner.addresses else s.port
        self.url = f"http://{s.host}:{port}"
        return self

    async def stop(self) -> None:
        if self.attestation is not None:
            await self.attestation.stop()
        for source in self.sources:
            await source.stop()
        if self.responder is not None:
            await self.responder.drain()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.service.close()
        self.registry.close()


async def serve_forever(settings: AuditSettings) -> None:
    running = await RunningAudit(settings).start()
    print(f"audit: listening on {running.url} (log {settings.directory})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
