"""The webhook deciding with the compiled policy of a signed bundle (``--engine wasm``).

A real ``jovial-guard webhook serve`` with two forked workers, fed a signed bundle built by
``build_bundle``: its answers to every policy-class review equal the answers the handler
gives with the real OPA; a new bundle revision replaces the policy in every worker and the
decision cache with it; a tampered bundle is refused and the previous revision keeps
deciding.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jovial_guard.admission.handler import AdmissionHandler
from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.policy.bundles import SigningKey, build_bundle
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, free_loopback_port, policy_revision
from tests.conftest import VECTORS

CASES: list[dict[str, Any]] = [d for d in yaml.safe_load_all((VECTORS / "policy-classes" / "cases.yaml").read_text()) if d]


class Webhook:
    """The webhook on a signed bundle (revision rev-a), or with ``policy_dir`` on that
    directory compiled at start (``--policy-dir``, as the chart runs it without bundles)."""

    def __init__(self, root: Path, *, policy_dir: Path | None = None) -> None:
        self.root = root
        self.key = SigningKey.load_or_create(root / "keys")
        self.bundle = root / "bundle.tar.gz"
        build_bundle(DEFAULT_POLICY_DIR, self.bundle, key=self.key, revision="rev-a")
        source = (["--policy-dir", str(policy_dir), "--expected-policy-dir", str(policy_dir)] if policy_dir else
                  ["--bundle", str(self.bundle), "--bundle-key", str(self.key.public_path), "--bundle-key-id", self.key.key_id])
        self.certs = write_webhook_certs(root / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        self.ctx = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        self.base = f"https://127.0.0.1:{free_loopback_port()}"
        self.log = root / "webhook.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--engine", "wasm", *source, "--cert", str(self.certs.cert),
             "--key", str(self.certs.key), "--host", "127.0.0.1", "--port", self.base.rsplit(":", 1)[1],
             "--workers", "2", "--revision-interval", "0.5", "--log-level", "WARNING"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, context=self.ctx, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"webhook exited: {self.log.read_text()[-2000:]}")
            try:
                status, body = self.get("/readyz")
                if status == 200 and text in body:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"webhook not ready with {text!r}: {self.log.read_text()[-2000:]}")

    def review(self, review: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.base + "/mutate", data=json.dumps(review).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self.ctx, timeout=5) as resp:
            return json.loads(resp.read())["response"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    hook = Webhook(tmp_path_factory.mktemp("webhook-wasm"))
    try:
        hook.wait_ready("rev-a")
        yield hook
    finally:
        hook.stop()


def _comparable(response: dict[str, Any]) -> dict[str, Any]:
    audit = {k: v for k, v in response.get("auditAnnotations", {}).items()
             if k not in ("decision-id", "decision-cache", "policy-revision")}
    return {**{k: v for k, v in response.items() if k != "auditAnnotations"}, "auditAnnotations": audit}


async def test_every_case_is_answered_as_with_the_opa_server(webhook: Webhook, engine: PolicyEngine) -> None:
    handler = AdmissionHandler(engine)
    for review in CASES:
        ours = webhook.review(review)
        by_opa = (await handler.handle(json.dumps(review).encode(), mode="mutate")).body["response"]
        assert _comparable(ours) == _comparable(by_opa), review["request"]["object"]["metadata"]["name"]
        assert ours["auditAnnotations"]["policy-revision"] == "rev-a"


def test_a_new_revision_reaches_every_worker_and_the_cache(webhook: Webhook) -> None:
    review = CASES[0]
    before = [webhook.review(review)["auditAnnotations"] for _ in range(8)]  # either worker, each caches
    assert {a["policy-revision"] for a in before} == {"rev-a"}
    assert any(a["decision-cache"] == "hit" for a in before)
    staged = webhook.root / "next.tar.gz"
    build_bundle(DEFAULT_POLICY_DIR, staged, key=webhook.key, revision="rev-b")
    staged.replace(webhook.bundle)
    webhook.wait_ready("rev-b")
    time.sleep(1.5)  # every worker polls within its revision interval
    for _ in range(6):  # connections land on either worker
        audit = webhook.review(review)["auditAnnotations"]
        assert audit["policy-revision"] == "rev-b"


def test_a_tampered_bundle_is_refused_and_the_last_good_one_decides(webhook: Webhook) -> None:
    blob = bytearray(webhook.bundle.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    webhook.bundle.write_bytes(bytes(blob))
    time.sleep(1.5)
    status, body = webhook.get("/readyz")
    assert status == 200 and "rev-b" in body
    assert webhook.review(CASES[0])["auditAnnotations"]["policy-revision"] == "rev-b"
    assert "refused" in webhook.log.read_text()


async def test_the_policy_directory_compiled_at_start_answers_as_the_opa_server(
        tmp_path: Path, engine: PolicyEngine) -> None:
    hook = Webhook(tmp_path, policy_dir=DEFAULT_POLICY_DIR)
    try:
        revision = policy_revision(DEFAULT_POLICY_DIR)
        hook.wait_ready(revision)  # ready only on the directory's revision (--expected-policy-dir)
        handler = AdmissionHandler(engine)
        for review in CASES[:20]:
            ours = hook.review(review)
            by_opa = (await handler.handle(json.dumps(review).encode(), mode="mutate")).body["response"]
            assert _comparable(ours) == _comparable(by_opa), review["request"]["object"]["metadata"]["name"]
            assert ours["auditAnnotations"]["policy-revision"] == revision
    finally:
        hook.stop()


def test_a_policy_directory_that_does_not_compile_stops_the_webhook_saying_why(tmp_path: Path) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "broken.rego").write_text("package broken\n\nx := \n")
    proc = subprocess.run([sys.executable, "-m", "jovial_guard", "webhook", "serve", "--engine", "wasm", "--policy-dir",
                           str(broken), "--cert", str(broken / "data.json"), "--key", str(broken / "data.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "opa build -t wasm failed" in proc.stderr and "broken.rego" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
