"""A real, minimal Kubernetes control plane on loopback: Debian's etcd + our kube-apiserver.

kube-apiserver is built from the Go module proxy by scripts/setup.d/50-kube-apiserver.sh
and cached under $JOVIAL_GUARD_CACHE/tools/kube-apiserver/<version>/. No nodes, no
controller-manager: enough to run admission (webhooks, PodSecurity) and store objects.
Clients authenticate with a client certificate in ``system:masters``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jovial_guard import paths
from jovial_guard.admission.tls import create_ca, create_serving_cert
from jovial_guard.policy.opa_process import REPO_ROOT, free_loopback_port

KUBE_VERSION = "v1.37.2"


def find_kube_apiserver() -> str | None:
    """The cached build, or None (the caller skips, saying why)."""
    candidates = [os.environ.get("JOVIAL_GUARD_KUBE_APISERVER", ""), str(REPO_ROOT / ".tools" / "bin" / "kube-apiserver")]
    cache = paths.cache_dir()
    candidates.append(str(cache / "tools" / "kube-apiserver" / KUBE_VERSION / "kube-apiserver"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_etcd() -> str | None:
    return shutil.which("etcd") or (str(Path("/usr/bin/etcd")) if Path("/usr/bin/etcd").exists() else None)


def require_kube_apiserver() -> tuple[str, str]:
    """kube-apiserver and etcd, for a test module's top level: skipped only when
    ``JOVIAL_GUARD_SKIP_KUBE_APISERVER=1`` says so; otherwise a missing binary fails the
    module naming the set-up step (a cache miss must never become a green skip)."""
    if os.environ.get("JOVIAL_GUARD_SKIP_KUBE_APISERVER") == "1":
        pytest.skip("JOVIAL_GUARD_SKIP_KUBE_APISERVER=1: the API server tests were switched off explicitly",
                    allow_module_level=True)
    apiserver, etcd = find_kube_apiserver(), find_etcd()
    if apiserver is None:
        pytest.fail("kube-apiserver is not built: run scripts/test.d/50-kube-apiserver.sh (./guard test does)",
                    pytrace=False)
    if etcd is None:
        pytest.fail("etcd is missing: run scripts/install-system.sh test (package etcd-server)", pytrace=False)
    return apiserver, etcd


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _client_cert(ca_key: Any, ca_cert: x509.Certificate, *, user: str, group: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, group), x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


class LocalKubeCluster:
    """etcd + kube-apiserver in a temp dir; ``kubeconfig`` authenticates as cluster admin."""

    def __init__(self, *, apiserver: str, etcd: str, workdir: Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.apiserver_bin = apiserver
        #: More kube-apiserver flags (e.g. ``--enable-aggregator-routing=true``).
        self.extra_args = extra_args
        self.etcd_bin = etcd
        self._tmp = tempfile.TemporaryDirectory(prefix="jovial-guard-kube-") if workdir is None else None
        self.dir = Path(self._tmp.name) if self._tmp else workdir  # type: ignore[assignment]
        self.etcd_port = free_loopback_port()
        self.etcd_peer_port = free_loopback_port()
        self.port = free_loopback_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kubeconfig = self.dir / "kubeconfig"
        #: The addresses the serving certificate names (add before ``start``): it listens on
        #: loopback, but a forwarder may bring other clients to it.
        self.serving_ips: list[str] = ["127.0.0.1"]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _write_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = create_ca(common_name="jovial-guard test cluster CA")
        srv_key, srv_cert = create_serving_cert(ca_key=ca_key, ca_cert=ca_cert, dns_names=["localhost", "kubernetes"], ip_addresses=self.serving_ips)
        adm_key, adm_cert = _client_cert(ca_key, ca_cert, user="admin", group="system:masters")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
            "apiserver.crt": srv_cert.public_bytes(serialization.Encoding.PEM),
            "apiserver.key": _pem_key(srv_key),
            "admin.crt": adm_cert.public_bytes(serialization.Encoding.PEM),
            "admin.key": _pem_key(adm_key),
            "sa.key": sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()),
            "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: local\n  cluster: {{server: \"{self.url}\", certificate-authority: \"{pki / 'ca.crt'}\"}}\n"
            f"users:\n- name: admin\n  user: {{client-certificate: \"{pki / 'admin.crt'}\", client-key: \"{pki / 'admin.key'}\"}}\n"
            "contexts:\n- name: local\n  context: {cluster: local, user: admin}\ncurrent-context: local\n"
        )

    def start(self, *, timeout: float = 90.0) -> LocalKubeCluster:
        self._write_pki()
        pki = self.dir / "pki"
        etcd_log = open(self.dir / "etcd.log", "wb")
        self.procs.append(subprocess.Popen(
            [self.etcd_bin, "--data-dir", str(self.dir / "etcd"), "--name", "jg",
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
             "--initial-cluster", f"jg=http://127.0.0.1:{self.etcd_peer_port}",
             "--unsafe-no-fsync", "--log-level", "error"],
            stdout=etcd_log, stderr=etcd_log, stdin=subprocess.DEVNULL, start_new_session=True,
        ))
        self.audit_log = self.dir / "audit.log"
        audit_policy = self.dir / "audit-policy.yaml"
        audit_policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n- level: Metadata\n  resources: [{group: \"\", resources: [pods]}]\n- level: None\n"
        )
        api_log = open(self.dir / "apiserver.log", "wb")
        self.procs.append(subprocess.Popen(
            [self.apiserver_bin,
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
             f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
             f"--client-ca-file={pki / 'ca.crt'}",
             f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
             "--service-account-issuer=https://kubernetes.default.svc",
             "--service-cluster-ip-range=10.250.0.0/24",
             "--authorization-mode=RBAC", "--allow-privileged=true",
             "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
             "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
             f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}",
             f"--cert-dir={self.dir / 'certs'}", "--v=1", *self.extra_args],
            stdout=api_log, stderr=api_log, stdin=subprocess.DEVNULL, start_new_session=True,
        ))
        self._wait_ready(timeout)
        return self

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit log (pods, Metadata level), parsed."""
        import json

        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self.ssl_context()
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"control plane process exited: {self.logs()[-1500:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready within {timeout}s ({last}): {self.logs()[-3000:]}")

    def logs(self) -> str:
        return "\n".join((self.dir / n).read_text(errors="replace") for n in ("etcd.log", "apiserver.log") if (self.dir / n).exists())

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
                except ProcessLookupError:
                    pass
        self.procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalKubeCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
