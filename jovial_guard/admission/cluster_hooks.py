"""What the chart's hook Jobs run: wait until the webhook is ready, remove its configurations.

Standard library only (urllib + ssl), so the webhook image needs no Kubernetes client:
- :func:`wait_ready` polls the webhook Service's ``/readyz`` over TLS with the release's CA;
  the webhook configurations are created only after it returned;
- :func:`delete_configurations` deletes the Mutating/ValidatingWebhookConfiguration of the
  release with the Job's service account token (RBAC allows exactly those two names), so an
  uninstall never leaves a failurePolicy-Fail configuration pointing at nothing.
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KINDS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")


class HookError(RuntimeError):
    """The hook could not do its job (says what and where)."""


def wait_ready(url: str, *, ca_file: Path, timeout: float, interval: float = 2.0,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> float:
    """Return the seconds waited once ``url`` answers 200; raise :class:`HookError` at ``timeout``."""
    context = ssl.create_default_context(cafile=str(ca_file))
    start = clock()
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as resp:
                if resp.status == 200:
                    return clock() - start
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ssl.SSLError) as exc:
            last = str(exc)
        if clock() - start >= timeout:
            raise HookError(f"{url} not ready after {timeout:.0f}s (last: {last})")
        sleep(interval)


def delete_configurations(name: str, *, server: str | None = None, token_file: Path | None = None,
                          ca_file: Path | None = None) -> list[str]:
    """Delete both webhook configurations called ``name``; return what was deleted (absent is fine)."""
    if server is None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise HookError("not in a cluster: KUBERNETES_SERVICE_HOST is unset; pass --server")
        server = f"https://{host}:{port}"
    token_path = token_file or SERVICE_ACCOUNT_DIR / "token"
    ca_path = ca_file or SERVICE_ACCOUNT_DIR / "ca.crt"
    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise HookError(f"service account token {token_path} unreadable: {exc}") from exc
    context = ssl.create_default_context(cafile=str(ca_path))
    deleted = []
    for kind in KINDS:
        url = f"{server.rstrip('/')}/apis/admissionregistration.k8s.io/v1/{kind}/{name}"
        request = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10):
                deleted.append(f"{kind}/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise HookError(f"DELETE {kind}/{name}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise HookError(f"DELETE {kind}/{name}: {exc}") from exc
    return deleted
