"""TLS for the webhook: a CA + serving-certificate helper and hot certificate reload.

The API server only calls webhooks over HTTPS and verifies them against the ``caBundle``
of the webhook configuration, so the webhook needs a CA and a serving cert whose SANs
name the Service (``NAME.NAMESPACE.svc``). :func:`write_webhook_certs` creates both
(ECDSA P-256, which the API server accepts and which keeps handshakes cheap).

Rotation without restart: :class:`ReloadingTLS` keeps a *fresh* ``SSLContext`` per
certificate generation and switches each new connection onto the newest one from the SNI
callback (OpenSSL calls it for every handshake, with or without SNI). A new pair is
loaded into a new context first, so a half-written or mismatched rotation keeps serving
the old certificate instead of breaking every handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..atomic import atomic_write
from ..keyfile import load_private_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertPaths:
    """Where :func:`write_webhook_certs` put things."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(
    *, common_name: str = "jovial-guard webhook CA", days: int = 365, now: dt.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that signs only serving certificates (pathlen 0)."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def create_serving_cert(
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str] = (),
    days: int = 90,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for the webhook Service, signed by ``ca_key``."""
    dns = [d for d in dns_names if d]
    ips = [ipaddress.ip_address(i) for i in ip_addresses]
    if not dns and not ips:
        raise ValueError("a serving certificate needs at least one DNS name or IP address, e.g. jovial-guard.jhub.svc")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(i) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0] if dns else str(ips[0])))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically (rename), so a reloading server never reads half a file."""
    atomic_write(path, data, mode=0o600 if private else 0o644)


def write_webhook_certs(
    directory: Path | str,
    *,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str] = (),
    days: int = 90,
    reuse_ca: bool = True,
) -> CertPaths:
    """Create (or reuse) ``ca.crt``/``ca.key`` and issue ``tls.crt``/``tls.key`` in ``directory``.

    Re-running with ``reuse_ca`` rotates only the serving pair, so the ``caBundle`` in the
    webhook configurations stays valid.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(out / "ca.crt", out / "ca.key", out / "tls.crt", out / "tls.key")
    if reuse_ca and paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        # The CA key gets every key file's checks (0600, our uid, P-256).
        ca_key = load_private_key(paths.ca_key, "p256")
    else:
        ca_key, ca_cert = create_ca()
        _write(paths.ca_key, _key_pem(ca_key), private=True)
        _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    key, cert = create_serving_cert(
        ca_key=ca_key, ca_cert=ca_cert, dns_names=dns_names, ip_addresses=ip_addresses, days=days
    )
    # Key first, then cert: the reloader keys on the cert's mtime and verifies the pair.
    _write(paths.key, _key_pem(key), private=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return paths


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a webhook Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class ReloadingTLS:
    """An SSLContext for the server whose certificate follows the files on disk.

    ``context`` is handed to the server once; every handshake runs ``_on_handshake`` which
    (at most every ``check_interval`` seconds) looks at the files' mtimes, loads a changed
    pair into a new context, and moves the connection onto the newest good context.
    """

    def __init__(
        self,
        cert: Path | str,
        key: Path | str,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.check_interval = check_interval
        self._clock = clock
        self._current = _server_context(self.cert, self.key)
        self._stamp = self._mtimes()
        self._checked = clock()
        self.generation = 1
        self.last_error: str | None = None
        # The dispatcher context itself serves the first pair too.
        self.context = _server_context(self.cert, self.key)
        self.context.sni_callback = self._on_handshake

    def _mtimes(self) -> tuple[int, int]:
        try:
            return (self.cert.stat().st_mtime_ns, self.key.stat().st_mtime_ns)
        except OSError:
            return (-1, -1)

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Load a changed pair; returns True if a new certificate is now served."""
        now = self._clock()
        if not force and now - self._checked < self.check_interval:
            return False
        self._checked = now
        stamp = self._mtimes()
        if stamp == self._stamp or stamp == (-1, -1):
            return False
        try:
            fresh = _server_context(self.cert, self.key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Half-rotated (new cert, old key): keep serving the old pair, retry later.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("certificate reload failed, keeping the previous one: %s", self.last_error)
            return False
        self._current = fresh
        self._stamp = stamp
        self.generation += 1
        self.last_error = None
        log.info("serving certificate reloaded from %s (generation %d)", self.cert, self.generation)
        return True

    def _on_handshake(self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        try:
            self.maybe_reload()
            if ssl_obj.context is not self._current:
                ssl_obj.context = self._current
        except Exception:
            log.exception("certificate switch failed")
