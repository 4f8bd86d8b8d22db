"""The webhook on an OPA started by hand (`opa run --server policies/`, no revision document).

It serves, reports the revision as unversioned, and /readyz stays not ready (saying what to
load) until a revision appears; the CLI does not die with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, find_opa, free_loopback_port

from .conftest import config_for, start_webhook
from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod


def _wait_http(url: str, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def hand_started_opa() -> Iterator[str]:
    """`opa run --server policies/` exactly as the README's reader would start it."""
    port = free_loopback_port()
    proc = subprocess.Popen([find_opa(), "run", "--server", "--disable-telemetry", "--addr", f"127.0.0.1:{port}",
                             str(DEFAULT_POLICY_DIR)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _put_revision(opa_url: str, revision: str) -> None:
    request = urllib.request.Request(f"{opa_url}/v1/data/jovial_guard_meta", method="PUT",
                                     data=json.dumps({"revision": revision}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass


async def test_unversioned_opa_is_served_but_not_ready_until_a_revision_appears(hand_started_opa: str, webhook_certs: Any) -> None:
    running, runner = await start_webhook(config_for(hand_started_opa, webhook_certs, revision_interval=0.1), webhook_certs.ca_cert)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.client_ssl())) as s:
            async with s.get(f"{running.url}/readyz") as resp:
                assert resp.status == 503
                why = await resp.text()
            assert "unversioned" in why and "jovial_guard_meta" in why and "revision.json" in why
            pod = as_api_server_sends(await kubespawner_pod(username="ursula"))
            async with s.post(f"{running.url}/mutate", json=admission_review(pod)) as resp:
                doc = await resp.json()
            assert doc["response"]["auditAnnotations"]["policy-revision"] == "unversioned"
            async with s.post(f"{running.url}/mutate", json=admission_review(pod)) as resp:
                again = await resp.json()
            assert again["response"]["auditAnnotations"]["decision-cache"] == "miss"  # never cached unversioned
            async with s.get(f"{running.url}/readyz") as resp:
                assert resp.status == 503  # a decision naming "unversioned" does not make it ready

            _put_revision(hand_started_opa, "sha256:loaded-by-hand")
            deadline, status = time.monotonic() + 10, 503
            while status != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                async with s.get(f"{running.url}/readyz") as resp:
                    status, text = resp.status, await resp.text()
            assert status == 200 and "sha256:loaded-by-hand" in text
    finally:
        await runner.cleanup()


def test_cli_serves_an_unversioned_opa_without_a_traceback(hand_started_opa: str, webhook_certs: Any) -> None:
    import ssl

    port = free_loopback_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", hand_started_opa, "--cert", str(webhook_certs.cert),
         "--key", str(webhook_certs.key), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        context = ssl.create_default_context(cafile=str(webhook_certs.ca_cert))
        deadline = time.monotonic() + 20
        status = None
        while status is None:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=1)
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                assert time.monotonic() < deadline, "webhook did not start"
                time.sleep(0.1)
        assert status == 503
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert "Traceback" not in stderr, stderr
    # One JSON log line per event (the webhook's default log format).
    warnings = [line for line in stderr.splitlines() if '"level": "warning"' in line.replace('":"', '": "')]
    assert len(warnings) == 1 and "unversioned" in warnings[0], stderr
