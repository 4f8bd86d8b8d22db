"""The active signed bundle in a cluster: a ConfigMap that the bundle service serves.

The policy store (revisions, history, the signing key) stays with the policy admins, in
their backed-up state directory: a signing key inside the cluster would let anyone who can
read one Secret sign policies. ``policy deploy --kubeconfig`` publishes only the active
revision's *signed* bundle into a ConfigMap in the webhook's namespace; the bundle service
(``jovial-guard policy serve-bundles``) reads that ConfigMap and serves it, with long
polling, to every webhook replica's OPA, which verifies the signature itself with the
public key it was configured with. Whoever can edit the ConfigMap can therefore stop new
revisions from arriving, but cannot make any OPA load a policy the key did not sign.

A ConfigMap holds up to 1 MiB: the shipped bundle is about 230 KiB (most of it the compiled
policy it carries for webhook workers).
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from ..errors import Unavailable

BUNDLE_KEY = "bundle.tar.gz"
REVISION_KEY = "revision"
MAX_BUNDLE_BYTES = 900 * 1024


class PublishError(Unavailable):
    """The bundle could not be published to, or read from, the cluster."""


def _core(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        return client.CoreV1Api(config.new_client_from_config(kubeconfig))  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


def parse_target(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` of the ConfigMap; a clear error otherwise."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise PublishError(f"--configmap must be NAMESPACE/NAME, e.g. jhub/jovial-guard-policy; got {text!r}")
    return namespace, name


class ConfigMapBundle:
    """Publish and read the active bundle in one ConfigMap."""

    def __init__(self, namespace: str, name: str, *, kubeconfig: str | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self._api = _core(kubeconfig)

    def publish(self, revision: str, payload: bytes) -> None:
        """Create or replace the ConfigMap with ``payload`` as the active revision."""
        from kubernetes.client.exceptions import ApiException

        if len(payload) > MAX_BUNDLE_BYTES:
            raise PublishError(f"bundle is {len(payload)} bytes; a ConfigMap holds at most {MAX_BUNDLE_BYTES}")
        body = {
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "jovial-guard"},
                         "annotations": {"jovial-guard.io/policy-revision": revision}},
            "data": {REVISION_KEY: revision},
            "binaryData": {BUNDLE_KEY: base64.b64encode(payload).decode()},
        }
        try:
            try:
                self._api.replace_namespaced_config_map(self.name, self.namespace, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._api.create_namespaced_config_map(self.namespace, body)
        except ApiException as exc:
            raise PublishError(f"cannot publish to ConfigMap {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc

    def read(self) -> tuple[str, bytes] | None:
        """(revision, bundle bytes) as published, or None when nothing is."""
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self._api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise PublishError(f"cannot read ConfigMap {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc
        raw = (cm.binary_data or {}).get(BUNDLE_KEY)
        revision = (cm.data or {}).get(REVISION_KEY)
        if not raw or not revision:
            return None
        return revision, base64.b64decode(raw)


class ConfigMapSource:
    """What the bundle service serves: the ConfigMap, re-read every ``interval`` seconds.

    Has the store's ``current()``, ``bundle_bytes()`` and ``current_bundle()`` shape
    (:class:`~jovial_guard.policy.bundle_server.BundleSource`), so the
    same long-polling bundle app serves it; the previous payload stays readable for a moment,
    so a request that saw the old revision just before a refresh still gets its bytes. The ETag is the published revision plus a digest of the bytes, so any change to
    the ConfigMap (including a tampered one) reaches the OPAs, which decide whether to
    accept it. A read failure keeps serving the last bundle read.
    """

    def __init__(self, target: ConfigMapBundle, *, interval: float = 1.0) -> None:
        self.target = target
        self.interval = interval
        self._current: tuple[str, bytes] | None = None
        self._previous: tuple[str, bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def refresh(self) -> None:
        import hashlib

        try:
            found = self.target.read()
        except Exception as exc:  # noqa: BLE001 - keep serving the last good read
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self.last_error = None
        if found is None:
            self._current = None
            return
        revision, payload = found
        tag = f"{revision}+{hashlib.sha256(payload).hexdigest()[:16]}"
        if self._current is None or self._current[0] != tag:
            self._previous, self._current = self._current, (tag, payload)

    def current_bundle(self) -> tuple[str, bytes] | None:
        return self._current

    def current(self) -> str | None:
        """The served revision tag, or None when nothing is published."""
        found = self._current
        return found[0] if found else None

    def bundle_bytes(self, revision: str) -> bytes:
        """The payload served under ``revision`` (the current or the one just before)."""
        for found in (self._current, self._previous):
            if found is not None and found[0] == revision:
                return found[1]
        raise KeyError(f"revision {revision} is no longer served")

    def start(self) -> ConfigMapSource:
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="jovial-guard-configmap-source", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def wait_published(source: ConfigMapBundle, revision: str, *, timeout: float = 10.0) -> None:
    """Block until the ConfigMap names ``revision`` (read-after-write across API servers)."""
    deadline = time.monotonic() + timeout
    while True:
        found = source.read()
        if found is not None and found[0] == revision:
            return
        if time.monotonic() > deadline:
            raise PublishError(f"ConfigMap does not show revision {revision} after {timeout:g}s")
        time.sleep(0.1)
