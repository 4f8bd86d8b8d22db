"""Fail closed: OPA dead, slow, unreachable, undefined or nonsensical never yields an allow."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, free_loopback_port
from jovial_guard.workload import Workload


def notebook(i: int, *, privileged: bool = False) -> Workload:
    container: dict[str, Any] = {"name": "nb", "image": "quay.io/jupyter/base-notebook:2024-05-27"}
    if privileged:
        container["securityContext"] = {"privileged": True}
    return workload_from_object(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"}, "spec": {"containers": [container]}}
    )


def assert_fail_closed(decision: Any) -> None:
    assert decision.allowed is False
    assert decision.spec is None
    assert [r.rule for r in decision.reasons] == [ENGINE_UNAVAILABLE]


async def test_killing_opa_mid_batch_denies_the_rest() -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=2.0) as conn:
            engine = PolicyEngine(conn, deadline=2.0)
            decisions = []
            for i in range(120):
                if i == 60:
                    opa.kill()
                decisions.append(await engine.decide(notebook(i, privileged=(i % 3 == 0))))
    before, after = decisions[:60], decisions[60:]
    assert all(d.allowed == (i % 3 != 0) for i, d in enumerate(before))
    for decision in after:
        assert_fail_closed(decision)


async def test_concurrent_batch_when_opa_dies_has_no_accidental_allow() -> None:
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url), timeout=2.0) as conn:
            engine = PolicyEngine(conn, deadline=2.0)
            batch = asyncio.ensure_future(engine.decide_many([notebook(i, privileged=True) for i in range(400)]))
            await asyncio.sleep(0.01)
            opa.kill()
            decisions = await batch
    assert len(decisions) == 400
    assert not any(d.allowed for d in decisions)
    assert any(d.reasons[0].rule == ENGINE_UNAVAILABLE for d in decisions)


async def test_unreachable_opa_denies() -> None:
    port = free_loopback_port()  # nothing listens there
    async with OpaConnection(OpaEndpoint(f"http://127.0.0.1:{port}"), timeout=1.0) as conn:
        decision = await PolicyEngine(conn, deadline=1.0).decide(notebook(0))
    assert_fail_closed(decision)
    assert "unreachable" in decision.reasons[0].message


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback listener that accepts and never answers: a hung OPA."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


async def test_slow_opa_past_deadline_denies(black_hole: int) -> None:
    async with OpaConnection(OpaEndpoint(f"http://127.0.0.1:{black_hole}"), timeout=10.0) as conn:
        decision = await PolicyEngine(conn, deadline=0.3).decide(notebook(0))
    assert_fail_closed(decision)
    assert "did not answer within 0.3s" in decision.reasons[0].message


async def test_undefined_decision_denies(tmp_path: Path) -> None:
    (tmp_path / "other.rego").write_text("package something.else\n\nx := 1\n")
    with ManagedOpa(tmp_path) as opa:
        async with OpaConnection(OpaEndpoint(opa.url)) as conn:
            decision = await PolicyEngine(conn).decide(notebook(0))
    assert_fail_closed(decision)
    assert "undefined" in decision.reasons[0].message


async def test_allow_without_a_spec_is_not_an_allow(tmp_path: Path) -> None:
    (tmp_path / "main.rego").write_text(
        'package jovial_guard.main\n\ndecision := {"allowed": true, "reasons": []}\n'
    )
    with ManagedOpa(tmp_path) as opa:
        async with OpaConnection(OpaEndpoint(opa.url)) as conn:
            decision = await PolicyEngine(conn).decide(notebook(0))
    assert_fail_closed(decision)
    assert "unusable" in decision.reasons[0].message


async def test_non_json_error_body_denies() -> None:
    """A proxy answering HTML instead of OPA: the client's JSON error becomes a denial."""
    from aiohttp import web

    async def html(_: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", html)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_loopback_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        async with OpaConnection(OpaEndpoint(f"http://127.0.0.1:{port}")) as conn:
            decision = await PolicyEngine(conn).decide(notebook(0))
    finally:
        await runner.cleanup()
    assert_fail_closed(decision)
    assert "502" in decision.reasons[0].message


def test_invalid_rego_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "broken.rego").write_text("package broken\n\nallow if {\n")
    with pytest.raises(PolicyEngineUnavailable, match="opa exited while starting"):
        ManagedOpa(tmp_path).start()


AUTHZ = """package system.authz

default allow := false

allow if input.identity == "s3cret-token"

allow if input.path == ["health"]
"""


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opa-test-ca")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "opa.crt", tmp_path / "opa.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


async def test_external_opa_with_tls_ca_and_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    authz = tmp_path / "authz.rego"
    authz.write_text(AUTHZ)
    with ManagedOpa(
        DEFAULT_POLICY_DIR,
        extra_args=["--authentication=token", "--authorization=basic"],
        data_paths=[authz],
        tls_cert=cert,
        tls_key=key,
        tls_ca=cert,
    ) as opa:
        assert opa.url.startswith("https://")
        good = OpaEndpoint(opa.url, token="s3cret-token", ca_file=str(cert))
        async with OpaConnection(good) as conn:
            assert (await PolicyEngine(conn).decide(notebook(0))).allowed
        async with OpaConnection(OpaEndpoint(opa.url, token="wrong", ca_file=str(cert))) as conn:
            assert_fail_closed(await PolicyEngine(conn).decide(notebook(0)))
        # Without our CA the certificate is not trusted: denied, not allowed insecurely.
        async with OpaConnection(OpaEndpoint(opa.url, token="s3cret-token")) as conn:
            assert_fail_closed(await PolicyEngine(conn).decide(notebook(0)))
