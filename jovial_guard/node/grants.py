"""The node agent as the credentials agent: sealed grants in, the user's fileset mounted.

One pass (:meth:`NodeGrants.sync`) lists the grant Secrets addressed to this node
(:mod:`.grant_channel`), hands each new or changed one to the embedded mode's credentials
agent (:class:`jovial_guard.credentials.agent.NodeAgent`: signature, node, user, revocation
and expiry checks, then the ``bind`` backend mounts the fileset on
``<staging root>/<user>/<leaf>``), records a Secret that disappeared as revoked (so its sealed
bytes are refused if they come back) and unmounts it, then sweeps: expired and unaccounted
mounts go. The notebook pod mounts ``<staging root>/<user>`` read-only with HostToContainer
propagation (the webhook adds it, the policy allows no other host path), so a mount or an
unmount here reaches the running pod at once. No key material goes near the pod.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..credentials.agent import NodeAgent
from ..credentials.backends.bind import BindBackend
from ..credentials.delivery import load_or_create_agent_key, load_public_key
from ..credentials.errors import CredentialError, GrantRefused, InvalidGrant
from ..credentials.revocation import Revocation, RevocationList
from ..errors import JovialGuardError, Misconfigured
from . import grant_channel as channel

log = logging.getLogger("jovial_guard.node.grants")


def load_issuer_key(path: Path) -> Ed25519PublicKey:
    key = load_public_key(path)
    if not isinstance(key, Ed25519PublicKey):
        raise Misconfigured(f"{path}: the issuer's key must be an Ed25519 public key (issuer-signing.key.pub)")
    return key


class NodeGrants:
    """Grants for one node; ``sync`` is one pass (call it every few seconds)."""

    def __init__(self, api: Any, *, node_name: str, namespace: str, state_dir: Path, issuer_key: Ed25519PublicKey,
                 storage_root: Path, staging_root: Path) -> None:
        self.api = api
        self.node_name = node_name
        self.namespace = namespace
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = load_or_create_agent_key(state_dir / "node-grant.key")
        self.agent = NodeAgent(
            agent_id=node_name, private_key=private, issuer_key=issuer_key,
            revocations=RevocationList(state_dir / "withdrawn.json"),
            backend=BindBackend(storage_root=storage_root, staging_root=staging_root, work_root=state_dir / "work",
                                create_filesets=False),
        )
        # The staging root must be a shared mount before any pod mounts a directory under it:
        # the runtime refuses HostToContainer propagation from a private mount.
        self.agent.backend.prepare()
        self._seen: dict[str, tuple[str, str | None]] = {}  # secret name -> (resourceVersion, serial)

    @property
    def public_key(self) -> X25519PublicKey:
        return self.agent.public_key

    def publish_key(self, labels: Any) -> None:
        """Put this node's grant key on its Node object (``labels`` is the node's :class:`NodeLabels`)."""
        labels.annotate({channel.KEY_ANNOTATION: channel.encode_key(self.public_key)})

    def sync(self) -> list[str]:
        """One pass; returns a line per change, for the log."""
        changes: list[str] = []
        listed = {d.name: d for d in channel.delivered(self.api, namespace=self.namespace, node=self.node_name)}
        for name in sorted(set(self._seen) - set(listed)):
            _version, serial = self._seen.pop(name)
            if serial is not None:
                self._withdraw(serial, name)
                changes.append(f"{name}: withdrawn, serial {serial} unmounted")
        for name, item in sorted(listed.items()):
            if self._seen.get(name, ("", None))[0] == item.version:
                continue
            status, serial = self._accept(item)
            version = channel.set_status(self.api, namespace=self.namespace, name=name, status=status)
            self._seen[name] = (version or item.version, serial)
            changes.append(f"{name}: {status}")
        for user in self.agent.sweep():
            changes.append(f"sweep: removed {user}'s mount (expired, revoked or unaccounted)")
        return changes

    def _accept(self, item: channel.Delivered) -> tuple[str, str | None]:
        if item.sealed is None:
            return "refused: the Secret holds no sealed grant", None
        try:
            grant = self.agent.accept(item.sealed, user=item.user)
        except InvalidGrant:
            log.warning("grant %s refused: not sealed to node %s by the issuer", item.name, self.node_name)
            return f"refused: invalid grant (not sealed to node {self.node_name} by the issuer)", None
        except GrantRefused as refusal:
            log.warning("grant %s refused: %s", item.name, refusal)
            return f"refused: {refusal}", None
        except (CredentialError, JovialGuardError, OSError) as exc:
            log.error("grant %s could not be mounted: %s", item.name, exc)
            return f"refused: cannot mount ({exc})", None
        return f"mounted {grant.fileset} ({grant.mode}) for {grant.user} until {grant.expires}", grant.serial

    def _withdraw(self, serial: str, name: str) -> None:
        entry = Revocation(serial=serial, user="", reason=f"grant Secret {name} deleted", at=int(time.time()))
        self.agent.revocations.add([entry])
        self.agent.on_revoked([entry])

    def teardown(self) -> None:
        """Unmount everything (agent stopping for good; tests)."""
        self.agent.backend.teardown()
