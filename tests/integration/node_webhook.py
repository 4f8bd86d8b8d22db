"""The project's admission webhook in front of the single-node cluster.

``jovial-guard webhook serve`` runs as a process on loopback with a real OPA on the
committed policies; deploy/'s webhook configurations are registered with ``clientConfig``
pointed at it. Pods in the namespaces the configurations select are then patched by the
webhook itself before the kubelet ever sees them.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, free_loopback_port
from jovial_guard.processes import stop_group


def webhook_configurations(port: int, ca_file: Path) -> list[dict[str, Any]]:
    """The chart's configurations with ``clientConfig`` pointed at the loopback webhook."""
    from tests.admission.jg_chart import loopback_configurations

    return loopback_configurations(port, ca_file)


@contextlib.contextmanager
def running_webhook(workdir: Path, *, policy_dir: Path = DEFAULT_POLICY_DIR) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """OPA + the webhook process on ``policy_dir``; yields the configurations to register and
    OPA's URL."""
    certs = write_webhook_certs(workdir, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    port = free_loopback_port()
    with ManagedOpa(policy_dir) as opa, open(workdir / "webhook.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", opa.url,
             "--cert", str(certs.cert), "--key", str(certs.key), "--host", "127.0.0.1", "--port", str(port),
             "--expected-policy-dir", str(policy_dir)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            _wait_ready(port, certs.ca_cert, proc, workdir / "webhook.log")
            yield webhook_configurations(port, certs.ca_cert), opa.url
        finally:
            stop_group(proc, grace=15)


@contextlib.contextmanager
def registered_webhook(api: Any, workdir: Path, *, policy_dir: Path = DEFAULT_POLICY_DIR) -> Iterator[str]:
    """:func:`running_webhook`, its configurations registered with the cluster ``api`` (an
    ApiClient) while it runs; yields OPA's URL. The configurations go before the webhook
    stops, so the API server never calls a webhook that is gone."""
    from kubernetes import client

    reg = client.AdmissionregistrationV1Api(api)
    with running_webhook(workdir, policy_dir=policy_dir) as ((mutating, validating), opa_url):
        reg.create_mutating_webhook_configuration(mutating)
        reg.create_validating_webhook_configuration(validating)
        try:
            yield opa_url
        finally:
            reg.delete_mutating_webhook_configuration(mutating["metadata"]["name"])
            reg.delete_validating_webhook_configuration(validating["metadata"]["name"])


def _wait_ready(port: int, ca_file: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:  # noqa: BLE001 - poll until ready
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"webhook did not become ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)
