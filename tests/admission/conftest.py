"""Fixtures for the webhook: certificates, a running HTTPS webhook on the session OPA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jovial_guard.admission.server import WebhookConfig, WebhookServer
from jovial_guard.admission.tls import CertPaths, write_webhook_certs
from jovial_guard.policy.opa_process import ManagedOpa, free_loopback_port


@pytest.fixture(scope="session")
def webhook_certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_webhook_certs(tmp_path_factory.mktemp("webhook-certs"), dns_names=["localhost"], ip_addresses=["127.0.0.1"])


class RunningWebhook:
    """A WebhookServer serving on 127.0.0.1 inside the test loop."""

    def __init__(self, server: WebhookServer, url: str, ca: Path) -> None:
        self.server = server
        self.url = url
        self.ca = ca

    def client_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


async def start_webhook(config: WebhookConfig, ca: Path) -> tuple[RunningWebhook, Any]:
    from aiohttp import web

    server = WebhookServer(config)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=server.tls.context)
    await site.start()
    return RunningWebhook(server, f"https://127.0.0.1:{config.port}", ca), runner


def config_for(opa_url: str, certs: CertPaths, **overrides: Any) -> WebhookConfig:
    settings: dict[str, Any] = dict(
        opa_url=opa_url, cert=certs.cert, key=certs.key, host="127.0.0.1", port=free_loopback_port(),
        revision_interval=0.2, cert_check_interval=0.0,
    )
    settings.update(overrides)
    return WebhookConfig(**settings)


@pytest.fixture(scope="session")
async def webhook(opa: ManagedOpa, webhook_certs: CertPaths) -> AsyncIterator[RunningWebhook]:
    running, runner = await start_webhook(
        config_for(opa.url, webhook_certs, expected_revision=opa.revision), webhook_certs.ca_cert
    )
    try:
        yield running
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
async def https(webhook: RunningWebhook) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=webhook.client_ssl())) as session:
        yield session
