"""The webhook image (images/webhook/), imported into the tests' podman storage and run.

Built by scripts/test.d/70-webhook-image.sh (a tarball, no registry); imported here the way
an operator imports it before pushing it to a registry. Run as the chart runs it: uid 65532,
read-only root, only /tmp writable; policies prepared by `webhook prepare-policies`, OPA from
the image on loopback, `webhook serve` answering /healthz and /readyz over TLS.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from jovial_guard.admission.tls import write_webhook_certs
from jovial_guard.policy.opa_process import REPO_ROOT, free_loopback_port

pytestmark = pytest.mark.integration
if os.environ.get("JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE") == "1":
    pytest.skip("JOVIAL_GUARD_SKIP_WEBHOOK_IMAGE=1: the webhook image test was switched off explicitly", allow_module_level=True)

from .node_images import WEBHOOK_CHANGES as CHANGES
from .node_images import WEBHOOK_REPOSITORY as REPOSITORY
from .node_images import WEBHOOK_TARBALL as TARBALL
from .node_images import WEBHOOK_UID as UID

SCRIPT = REPO_ROOT / "scripts" / "test.d" / "70-webhook-image.sh"
TAG = "0.1.0"
#: As the chart runs it: non-root, read-only root, nothing but /tmp writable, no capabilities.
HARDENED = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777,size=64m", f"--user={UID}:{UID}",
            "--cap-drop=ALL", "--security-opt=no-new-privileges"]


@pytest.fixture(scope="module")
def image() -> Iterator[SimpleNamespace]:
    if not TARBALL.exists():
        pytest.fail(f"the webhook image is not built: run {SCRIPT.relative_to(REPO_ROOT)} (./guard test does)", pytrace=False)
    key = subprocess.run(["bash", str(SCRIPT), "--key"], capture_output=True, text=True, check=True).stdout.strip()
    if f"webhook-{key}.tar" != TARBALL.resolve().name:
        pytest.fail(f"{TARBALL} is stale (recipe or code changed): rerun {SCRIPT.relative_to(REPO_ROOT)}", pytrace=False)
    from jovial_guard.runtime.podman import PodmanService

    service = PodmanService()
    service.write_config()
    podman = service.podman_args()
    started = time.monotonic()
    argv = [*podman, "import", "--quiet"]
    for change in CHANGES:
        argv += ["--change", change]
    for step in ([*argv, str(TARBALL), f"{REPOSITORY}:{key}"], [*podman, "tag", f"{REPOSITORY}:{key}", f"{REPOSITORY}:{TAG}"]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"podman {step[len(podman)]} failed: {done.stderr.strip()[-1500:]}", pytrace=False)
    import_seconds = time.monotonic() - started
    size = int(subprocess.run([*podman, "image", "inspect", "--format", "{{.Size}}", f"{REPOSITORY}:{TAG}"],
                              capture_output=True, text=True, check=True).stdout.strip())
    print(f"\nwebhook image: {size / 1e6:.0f} MB, tarball {TARBALL.stat().st_size / 1e6:.0f} MB, import {import_seconds:.1f} s")
    yield SimpleNamespace(podman=podman, ref=f"{REPOSITORY}:{TAG}", size=size)


def run_in(image: SimpleNamespace, *args: str, extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["timeout", "-s", "KILL", "120", *image.podman, "run", "--rm", "--network=none", *HARDENED,
                           *(extra or []), image.ref, *args], capture_output=True, text=True, timeout=150)


def test_webhook_serve_help_runs_read_only_as_non_root(image: SimpleNamespace) -> None:
    proc = run_in(image, "webhook", "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--opa-url" in proc.stdout
    who = run_in(image, "-c", "import os; print(os.getuid(), os.getgid())", extra=["--entrypoint", "/opt/jovial-guard/venv/bin/python"])
    assert who.stdout.split() == [str(UID), str(UID)]
    # The budget includes wasmtime (~26 MB stripped), which evaluates the compiled policy.
    assert image.size < 430e6


def test_image_holds_no_hub_and_a_working_opa(image: SimpleNamespace) -> None:
    missing = run_in(image, "-c", "import jupyterhub", extra=["--entrypoint", "/opt/jovial-guard/venv/bin/python"])
    assert missing.returncode != 0 and "No module named 'jupyterhub'" in missing.stderr
    opa = run_in(image, "version", extra=["--entrypoint", "opa"])
    assert opa.returncode == 0 and "Version:" in opa.stdout
    written = run_in(image, "-c", "open('/opt/jovial-guard/x', 'w')", extra=["--entrypoint", "/opt/jovial-guard/venv/bin/python"])
    assert "Read-only file system" in written.stderr


def test_webhook_answers_healthz_and_readyz_against_the_image_opa(image: SimpleNamespace, tmp_path: Path) -> None:
    certs = write_webhook_certs(tmp_path / "tls", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    for path in (certs.cert, certs.key):
        os.chown(path, UID, UID)
    os.chmod(certs.key.parent, 0o755)
    port, opa_port = free_loopback_port(), free_loopback_port()
    script = (
        "set -e; jovial-guard webhook prepare-policies --out /tmp/p/policies --meta /tmp/p/meta.json >/dev/null; "
        f"opa run --server --addr=127.0.0.1:{opa_port} --disable-telemetry --log-level=error /tmp/p/policies /tmp/p/meta.json & "
        f"exec jovial-guard webhook serve --opa-url=http://127.0.0.1:{opa_port} --cert=/tls/tls.crt --key=/tls/tls.key "
        f"--host=127.0.0.1 --port={port} --expected-policy-dir=/tmp/p/policies"
    )
    name = f"jg-webhook-image-test-{port}"
    started = time.monotonic()
    proc = subprocess.run([*image.podman, "run", "-d", "--name", name, "--network=host", *HARDENED,
                           "-v", f"{certs.cert.parent}:/tls:ro", "--entrypoint", "/bin/sh", image.ref, "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    try:
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            for path in ("/healthz", "/readyz"):
                if path in seen:
                    continue
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=context, timeout=2) as resp:
                        if resp.status == 200:
                            seen[path] = time.monotonic() - started
                except OSError:
                    pass
            time.sleep(0.1)
        logs = subprocess.run([*image.podman, "logs", name], capture_output=True, text=True).stdout[-2000:]
        assert set(seen) == {"/healthz", "/readyz"}, logs
        print(f"\nwebhook container: /healthz after {seen['/healthz']:.1f} s, /readyz after {seen['/readyz']:.1f} s")
    finally:
        subprocess.run([*image.podman, "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)


def test_the_image_decides_with_the_compiled_policy(image: SimpleNamespace) -> None:
    """wasmtime loads in the image and OPA compiles the shipped policy to Wasm there, read-only
    and non-root (only /tmp writable): `check` decides with it by default."""
    pod = ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": '
           '[{"name": "c", "image": "quay.io/jupyter/base-notebook:2024-05-27", "securityContext": {"privileged": true}}]}}')
    proc = run_in(image, "-c", f"printf '%s' '{pod}' | jovial-guard check -", extra=["--entrypoint", "/bin/sh"])
    assert proc.returncode == 1, proc.stderr
    assert '"rule": "pod-security/privileged"' in proc.stdout, proc.stdout + proc.stderr
