"""How sealed storage grants travel between the issuer (the hub) and a node's agent.

* **The node's key** is an X25519 public key the agent publishes on its own Node object, as the
  annotation ``jovial-guard.io/grant-key`` (raw key, base64). An annotation, not a ConfigMap:
  it lives and dies with the node, the agent already patches its Node (and needs no write
  access to ConfigMaps anyone else reads), and the issuer needs only ``get nodes``. The
  private key never leaves the node's state directory (mode 0600).
* **A grant** reaches the agent as a Secret in the agent's namespace, one per grant
  (``jg-grant-<serial>``), labelled with the node and the user, holding only the sealed
  bytes (HPKE to the node's key, signed by the issuer: :mod:`jovial_guard.credentials.delivery`).
  The Secret is never mounted anywhere; the notebook pod sees file data through its staging
  directory, never a key or a grant. Without the node's private key and the issuer's signing
  key a Secret is useless, so a Secret written by anyone else is refused as invalid.
* **Revocation** deletes the Secret; the agent unmounts and records the serial so the same
  sealed bytes are refused if they reappear. Expiry is checked by the agent's own sweep.

The agent writes what it did into the Secret's annotation ``jovial-guard.io/grant-status``
(``mounted`` or ``refused: <why>``), for the hub and for operators.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..credentials.grant import Grant
from ..credentials.issuer import Issuer
from ..errors import Misconfigured, Unavailable

KEY_ANNOTATION = "jovial-guard.io/grant-key"
NODE_LABEL = "jovial-guard.io/node"
USER_LABEL = "jovial-guard.io/user"
STATUS_ANNOTATION = "jovial-guard.io/grant-status"
SECRET_TYPE = "jovial-guard.io/sealed-grant"
SEALED_KEY = "sealed"


def secret_name(serial: str) -> str:
    return f"jg-grant-{serial}"


def encode_key(key: X25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def decode_key(text: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise Misconfigured(f"annotation {KEY_ANNOTATION} is not a base64 X25519 public key") from None


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise Unavailable(f"the API server refused to {what}: {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise Unavailable(f"the API server is unreachable ({what}): {exc}") from None


def node_key(api: Any, node: str) -> X25519PublicKey:
    """The grant key node ``node``'s agent published (issuer side)."""
    found = _call(f"read node {node}", _core(api).read_node, node)
    text = ((found.metadata.annotations or {}) if found is not None else {}).get(KEY_ANNOTATION)
    if not text:
        raise Misconfigured(f"node {node!r} has no {KEY_ANNOTATION} annotation: is its node agent running "
                            "with credentials enabled?")
    return decode_key(text)


def send_grant(api: Any, *, namespace: str, node: str, grant: Grant, sealed: bytes) -> str:
    """Create (or replace, on renewal) the grant's Secret for ``node``; returns its name."""
    name = secret_name(grant.serial)
    body = {
        "metadata": {"name": name, "labels": {NODE_LABEL: node, USER_LABEL: grant.user,
                                              "app.kubernetes.io/part-of": "jovial-guard"}},
        "type": SECRET_TYPE,
        "data": {SEALED_KEY: base64.b64encode(sealed).decode()},
    }
    core = _core(api)
    if _call(f"read secret {namespace}/{name}", core.read_namespaced_secret, name, namespace) is None:
        _call(f"create secret {namespace}/{name}", core.create_namespaced_secret, namespace, body)
    else:
        _call(f"replace secret {namespace}/{name}", core.replace_namespaced_secret, name, namespace, body)
    return name


def deliver(api: Any, issuer: Issuer, grant: Grant, *, node: str, namespace: str) -> str:
    """The hub's one call once its pod is scheduled on ``node``: seal ``grant`` to that node's
    published key and send it; returns the Secret's name."""
    sealed = issuer.seal_for(grant, agent_key=node_key(api, node), agent_id=node)
    return send_grant(api, namespace=namespace, node=node, grant=grant, sealed=sealed)


def grant_secret(api: Any, *, namespace: str, serial: str) -> Any:
    """The grant's Secret as stored (labels: node and user; annotations: the agent's status), None if absent."""
    core = _core(api)
    return _call(f"read secret {namespace}/{secret_name(serial)}", core.read_namespaced_secret,
                 secret_name(serial), namespace)


def withdraw_grant(api: Any, *, namespace: str, serial: str) -> bool:
    """Delete the grant's Secret (revocation, server stopped); False if it was not there."""
    core = _core(api)
    return _call(f"delete secret {namespace}/{secret_name(serial)}", core.delete_namespaced_secret,
                 secret_name(serial), namespace) is not None


@dataclass(frozen=True)
class Delivered:
    """One grant Secret addressed to this node, as the agent lists it."""

    name: str
    version: str
    user: str
    sealed: bytes | None
    status: str


def delivered(api: Any, *, namespace: str, node: str) -> list[Delivered]:
    """Every grant Secret labelled for ``node`` (agent side)."""
    listed = _call(f"list secrets in {namespace}", _core(api).list_namespaced_secret, namespace,
                   label_selector=f"{NODE_LABEL}={node}")
    if listed is None:
        raise Misconfigured(f"namespace {namespace!r} does not exist: check --grants-namespace")
    out = []
    for item in listed.items:
        if item.type != SECRET_TYPE:
            continue
        raw = (item.data or {}).get(SEALED_KEY)
        try:
            sealed = base64.b64decode(raw, validate=True) if raw else None
        except (ValueError, binascii.Error):
            sealed = None
        meta = item.metadata
        out.append(Delivered(name=meta.name, version=meta.resource_version, user=(meta.labels or {}).get(USER_LABEL, ""),
                             sealed=sealed, status=(meta.annotations or {}).get(STATUS_ANNOTATION, "")))
    return out


def set_status(api: Any, *, namespace: str, name: str, status: str) -> str | None:
    """Annotate the Secret with what the agent did; its new resourceVersion (None if gone)."""
    patched = _call(f"annotate secret {namespace}/{name}", _core(api).patch_namespaced_secret, name, namespace,
                    {"metadata": {"annotations": {STATUS_ANNOTATION: status}}})
    return None if patched is None else str(patched.metadata.resource_version)
