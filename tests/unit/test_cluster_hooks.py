"""The chart's hook commands fail with a message, not a traceback, when they cannot do their job."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jovial_guard.admission.cluster_hooks import HookError, delete_configurations, wait_ready
from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.cli import main
from jovial_guard.policy.opa_process import free_loopback_port


def test_wait_ready_gives_up_at_the_timeout_naming_the_url(tmp_path: Path) -> None:
    certs = write_webhook_certs(tmp_path, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    url = f"https://127.0.0.1:{free_loopback_port()}/readyz"
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(HookError, match=r"not ready after 5s"):
        wait_ready(url, ca_file=certs.ca_cert, timeout=5, interval=1, clock=lambda: now[0], sleep=sleep)
    result = CliRunner().invoke(main, ["webhook", "wait-ready", "--url", url, "--ca", str(certs.ca_cert), "--timeout", "0"])
    assert result.exit_code != 0 and "not ready" in result.output and "Traceback" not in result.output


def test_delete_configurations_outside_a_cluster_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(HookError, match="not in a cluster"):
        delete_configurations("jovial-guard")
    result = CliRunner().invoke(main, ["webhook", "delete-configurations", "jovial-guard"])
    assert result.exit_code != 0 and "KUBERNETES_SERVICE_HOST" in result.output


def test_prepare_policies_refuses_a_bad_overlay_with_a_message(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.json"
    overlay.write_text("{not json")
    result = CliRunner().invoke(main, ["webhook", "prepare-policies", "--overlay", str(overlay), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "not readable JSON" in result.output and not (tmp_path / "out").exists()
