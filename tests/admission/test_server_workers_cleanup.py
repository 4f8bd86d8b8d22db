"""Several webhook workers share a Prometheus multiprocess directory; one the server made is
removed when it stops (a long-lived node would otherwise collect one per restart)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from jovial_guard.policy.opa_process import ManagedOpa, free_loopback_port
from jovial_guard.processes import stop_group

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_workers_metrics_directory_is_removed_at_stop(opa: ManagedOpa, webhook_certs: Any, tmp_path: Path) -> None:
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jovial_guard", "webhook", "serve", "--opa-url", opa.url,
         "--cert", str(webhook_certs.cert), "--key", str(webhook_certs.key), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--expected-policy-dir", str(REPO / "policies")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"https://127.0.0.1:{port}/readyz", verify=str(webhook_certs.ca_cert),
                                timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "webhook did not become ready"
            time.sleep(0.2)
        made = list(tmp_path.glob("jovial-guard-metrics-*"))
        assert len(made) == 1 and made[0].is_dir()
    finally:
        stop_group(proc)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert list(tmp_path.glob("jovial-guard-metrics-*")) == []
