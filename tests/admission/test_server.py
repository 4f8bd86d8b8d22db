"""The HTTPS server: routes, readiness, metrics, TLS only, certificate rotation, workers."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.policy.opa_process import ManagedOpa, free_loopback_port
from jovial_guard.processes import stop_group

from .conftest import RunningWebhook, config_for, start_webhook
from .kubespawner_pods import admission_review, as_api_server_sends, kubespawner_pod

REPO = Path(__file__).resolve().parents[2]


async def test_healthz_and_readyz(webhook: RunningWebhook, https: aiohttp.ClientSession) -> None:
    async with https.get(f"{webhook.url}/healthz") as resp:
        assert resp.status == 200
    async with https.get(f"{webhook.url}/readyz") as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert "sha256:" in text


async def test_mutate_and_validate_over_https(webhook: RunningWebhook, https: aiohttp.ClientSession) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="olga"))
    review = admission_review(pod)
    async with https.post(f"{webhook.url}/mutate", json=review) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = await resp.json()
    assert doc["kind"] == "AdmissionReview" and doc["response"]["uid"] == review["request"]["uid"]
    assert doc["response"]["allowed"] is True and doc["response"]["patchType"] == "JSONPatch"
    async with https.post(f"{webhook.url}/validate", json=review) as resp:
        assert (await resp.json())["response"]["allowed"] is False  # not yet hardened


@pytest.mark.parametrize("payload", [b"", b"garbage", b'{"kind":"AdmissionReview"}', b"\x00" * 64])
async def test_malformed_bodies_get_400(webhook: RunningWebhook, https: aiohttp.ClientSession, payload: bytes) -> None:
    async with https.post(f"{webhook.url}/validate", data=payload) as resp:
        assert resp.status == 400
        doc = await resp.json()
        assert doc["allowed"] is False and doc["reason"]


async def test_oversized_body_is_refused_not_crashed(webhook: RunningWebhook, https: aiohttp.ClientSession) -> None:
    async with https.post(f"{webhook.url}/mutate", data=b"x" * (5 * 1024 * 1024)) as resp:
        assert resp.status == 413


async def test_get_on_review_routes_is_405(webhook: RunningWebhook, https: aiohttp.ClientSession) -> None:
    async with https.get(f"{webhook.url}/validate") as resp:
        assert resp.status == 405


async def test_plain_http_is_not_served(webhook: RunningWebhook) -> None:
    port = int(webhook.url.rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.post(f"http://127.0.0.1:{port}/validate", data=b"{}") as resp:
                assert resp.status != 200  # pragma: no cover - must not get here with a 200


async def test_metrics_count_requests(webhook: RunningWebhook, https: aiohttp.ClientSession) -> None:
    pod = as_api_server_sends(await kubespawner_pod(username="pia"))
    for _ in range(2):
        async with https.post(f"{webhook.url}/mutate", json=admission_review(pod)) as resp:
            await resp.read()
    async with https.get(f"{webhook.url}/metrics") as resp:
        text = await resp.text()
    assert ('jovial_guard_admission_requests_total{dry_run="false",endpoint="mutate",kind="Pod",mode="none",'
            'namespace="jhub",operation="CREATE",outcome="allowed"}') in text
    assert 'user=' not in text  # no per-user label anywhere
    assert 'jovial_guard_policy_revision_info{revision="sha256:' in text
    assert 'jovial_guard_admission_cache_total{result="hit"}' in text
    assert "jovial_guard_admission_duration_seconds_bucket" in text
    assert "jovial_guard_admission_ready 1.0" in text


async def test_not_ready_when_opa_serves_another_revision(opa: ManagedOpa, webhook_certs: Any) -> None:
    running, runner = await start_webhook(config_for(opa.url, webhook_certs, expected_revision="sha256:not-this-one"), webhook_certs.ca_cert)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.client_ssl())) as s:
            async with s.get(f"{running.url}/readyz") as resp:
                assert resp.status == 503
                assert "expected sha256:not-this-one" in await resp.text()
    finally:
        await runner.cleanup()


async def test_not_ready_and_denying_when_opa_is_down(webhook_certs: Any) -> None:
    with ManagedOpa() as own:
        running, runner = await start_webhook(config_for(own.url, webhook_certs, revision_interval=0.1), webhook_certs.ca_cert)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.client_ssl())) as s:
                async with s.get(f"{running.url}/readyz") as resp:
                    assert resp.status == 200
                own.kill()
                deadline = time.monotonic() + 10
                status = 200
                while status == 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    async with s.get(f"{running.url}/readyz") as resp:
                        status = resp.status
                assert status == 503
                pod = as_api_server_sends(await kubespawner_pod(username="quinn"))
                async with s.post(f"{running.url}/mutate", json=admission_review(pod)) as resp:
                    doc = await resp.json()
                assert doc["response"]["allowed"] is False
                assert "policy-engine-unavailable" in doc["response"]["status"]["message"]
        finally:
            await runner.cleanup()


def _peer_cert_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number  # type: ignore[arg-type]


async def test_rotated_certificate_is_served_without_restart(opa: ManagedOpa, tmp_path: Path) -> None:
    certs = write_webhook_certs(tmp_path / "c", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    running, runner = await start_webhook(config_for(opa.url, certs), certs.ca_cert)
    port = int(running.url.rsplit(":", 1)[1])
    try:
        first = await asyncio.to_thread(_peer_cert_serial, port, certs.ca_cert)
        # A half-done rotation (new key, old cert) keeps the old pair serving.
        certs.key.write_bytes(write_webhook_certs(tmp_path / "other", dns_names=["x"]).key.read_bytes())
        assert await asyncio.to_thread(_peer_cert_serial, port, certs.ca_cert) == first
        # A completed rotation (rerun of the helper) is picked up on the next handshake.
        write_webhook_certs(tmp_path / "c", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        second = await asyncio.to_thread(_peer_cert_serial, port, certs.ca_cert)
        assert second != first
        assert running.server.tls.generation >= 2
        # And a review still works over the new certificate.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.client_ssl())) as s:
            async with s.get(f"{running.url}/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


@pytest.mark.integration
async def test_cli_serve_with_two_workers(opa: ManagedOpa, webhook_certs: Any, tmp_path: Path) -> None:
    port = free_loopback_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", opa.url, "--cert", str(webhook_certs.cert),
         "--key", str(webhook_certs.key), "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--expected-policy-dir", str(REPO / "policies")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(webhook_certs.ca_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as s:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with s.get(f"https://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "webhook did not become ready"
                await asyncio.sleep(0.2)
            pod = as_api_server_sends(await kubespawner_pod(username="rob"))
            for _ in range(20):
                async with s.post(f"https://127.0.0.1:{port}/mutate", json=admission_review(pod)) as resp:
                    assert (await resp.json())["response"]["allowed"] is True
            async with s.get(f"https://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        # Aggregated over both workers.
        line = next(l for l in text.splitlines() if l.startswith("jovial_guard_admission_requests_total{") and 'endpoint="mutate"' in l and 'outcome="allowed"' in l)
        assert float(line.split()[-1]) == 20.0
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
    finally:
        stop_group(proc)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""


async def test_decision_log_records_real_mutate_decisions_once(opa: ManagedOpa, webhook_certs: Any, tmp_path: Path) -> None:
    from jovial_guard.policy.decision_log import DecisionLog

    path = tmp_path / "decisions.jsonl"
    running, runner = await start_webhook(config_for(opa.url, webhook_certs, decision_log_path=path), webhook_certs.ca_cert)
    try:
        pod = as_api_server_sends(await kubespawner_pod(username="vera"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.client_ssl())) as s:
            for review in (admission_review(pod, dry_run=True), admission_review(pod), admission_review(pod)):
                async with s.post(f"{running.url}/mutate", json=review) as resp:
                    assert (await resp.json())["response"]["allowed"] is True
            async with s.post(f"{running.url}/validate", json=admission_review(pod)) as resp:
                await resp.read()
    finally:
        await runner.cleanup()
    records = list(DecisionLog(path).records())
    # dryRun: no side effect; the second real request was a cache hit; /validate is not logged.
    assert len(records) == 1
    (record,) = records
    assert record.allowed is True and record.origin == "admission"
    env = record.input["workload"]["pod"]["spec"]["containers"][0]["env"]
    assert all(e["value"] == "***" for e in env if "value" in e)
