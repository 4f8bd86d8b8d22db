"""The hub delivers storage grants to node agents: ``c.KubeGrants.*``.

The embedded mode's issuer (:class:`~jovial_guard.credentials.hub.StorageCredentials`: the
same ``state_dir``, ``key_dir`` and ``lifetime`` settings, in the hub's own state) issues the
grant the policy decided for the pod (the webhook's storage record on the admitted pod,
:mod:`jovial_guard.admission.records`). Once the pod has a node, the grant is sealed to that
node agent's published key and sent as a Secret (:mod:`jovial_guard.node.grant_channel`);
the spawn waits, bounded, for the agent's status on the Secret. A spawn whose node publishes
no key, whose agent refuses the grant or never answers fails with a message saying which, and
the grant is revoked and withdrawn. Stopping the server revokes the user's grants and deletes
their Secrets. A revocation made anywhere else (the audit responder in the hub process at
once; ``jovial-guard creds revoke`` or another process through the revocation list, at the
next tick) deletes the Secret too, and the agent unmounts. Live grants are renewed past half
their life by sending the renewed grant again.

The Kubernetes calls are the synchronous client's, made in a thread. What the hub needs:
``get`` on nodes, and ``get``, ``create``, ``update``, ``delete`` on Secrets in the grants
namespace (deploy/zero-to-jupyterhub/hub-grants-rbac.yaml).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from traitlets import Float, Unicode, validate
from traitlets.config import SingletonConfigurable

from ..admission.records import StorageRecord, read_storage_record
from ..credentials.errors import CredentialError
from ..credentials.grant import Grant
from ..credentials.issuer import Issuer
from ..credentials.revocation import Revocation
from ..errors import JovialGuardError, Misconfigured, Unavailable
from ..node import grant_channel
from ..node.labels import api_client as node_api_client

PodGetter = Callable[[], "dict[str, Any] | None"]


class GrantNotDelivered(Unavailable):
    """The user's storage could not be given to the pod's node; the message says why and what to check."""


class Channel(Protocol):
    """The hub's side of :mod:`jovial_guard.node.grant_channel` (tests pass their own)."""

    def deliver(self, issuer: Issuer, grant: Grant, *, node: str) -> str: ...
    def status(self, serial: str) -> str | None: ...
    def node_of(self, serial: str) -> str | None: ...
    def withdraw(self, serial: str) -> bool: ...


class ApiChannel:
    """:class:`Channel` over the API server (synchronous kubernetes client)."""

    def __init__(self, api: Any, *, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    def deliver(self, issuer: Issuer, grant: Grant, *, node: str) -> str:
        return grant_channel.deliver(self.api, issuer, grant, node=node, namespace=self.namespace)

    def status(self, serial: str) -> str | None:
        found = grant_channel.grant_secret(self.api, namespace=self.namespace, serial=serial)
        return None if found is None else str((found.metadata.annotations or {}).get(grant_channel.STATUS_ANNOTATION, ""))

    def node_of(self, serial: str) -> str | None:
        found = grant_channel.grant_secret(self.api, namespace=self.namespace, serial=serial)
        return None if found is None else (found.metadata.labels or {}).get(grant_channel.NODE_LABEL)

    def withdraw(self, serial: str) -> bool:
        return grant_channel.withdraw_grant(self.api, namespace=self.namespace, serial=serial)


def api_client(kubeconfig: str = "") -> Any:
    """A synchronous API client: ``kubeconfig`` if given, else ``$KUBECONFIG`` (a hub run
    outside the cluster), else the hub pod's service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "")
    return node_api_client(Path(path) if path else None)


@dataclass(frozen=True)
class Attached:
    """A grant the agent mounted, as the spawn records it (no secrets)."""

    serial: str
    node: str
    fileset: str
    mode: str
    mount_path: str
    expires: int
    status: str


class KubeGrants(SingletonConfigurable):
    """Storage grants for KubeSpawner's pods, delivered to node agents (see the module docstring)."""

    namespace = Unicode(
        "jovial-guard-node", config=True,
        help="""Namespace of the grant Secrets: the node agents' ``--grants-namespace``.
        Default ``jovial-guard-node``. Example: ``jovial-guard-system``.""",
    )
    kubeconfig = Unicode(
        "", config=True,
        help="""Kubeconfig for the grant calls. Default "": the hub pod's service account, or
        ``$KUBECONFIG`` for a hub outside the cluster. Example: ``/etc/jupyterhub/kubeconfig``.""",
    )
    schedule_timeout = Float(
        120.0, config=True,
        help="Seconds to wait for the pod to be given a node before the spawn fails. Default 120. Example: 300.",
    )
    mount_timeout = Float(
        60.0, config=True,
        help="""Seconds to wait for the node agent to mount the fileset (its status on the grant
        Secret) before the spawn fails. Default 60. Example: 30.""",
    )
    poll_interval = Float(0.5, config=True, help="Seconds between looks at the pod and the Secret. Default 0.5.")
    tick_interval = Float(
        10.0, config=True,
        help="""Seconds between rounds that withdraw grants revoked by other processes and renew
        live ones past half their life. Default 10. Example: 5.""",
    )

    @validate("schedule_timeout", "mount_timeout", "poll_interval", "tick_interval")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise ValueError(f"KubeGrants.{proposal['trait'].name} must be a positive number of seconds")
        return value

    def __init__(self, *, issuer: Issuer | None = None, channel: Channel | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._issuer, self._channel = issuer, channel
        self._delivered: dict[str, tuple[str, str]] = {}  # serial -> (user, node)
        self._task: asyncio.Task[None] | None = None
        self._opened = False

    # -- components, opened on first use ------------------------------------------------------
    @property
    def issuer(self) -> Issuer:
        if self._issuer is None:
            from ..credentials.hub import StorageCredentials

            self._issuer = StorageCredentials.instance(config=self.config, log=self.log).issuer
        return self._issuer

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            self._channel = ApiChannel(api_client(self.kubeconfig), namespace=self.namespace)
        return self._channel

    def open(self) -> None:
        """Issuer and channel ready, the revocation listener registered, and the grants a
        previous hub process delivered (live in the issuer, a Secret naming their node) taken back
        into account, so a revocation or a stop after a hub restart still withdraws them."""
        if self._opened:
            return
        issuer = self.issuer
        issuer.listeners.append(self._on_revoked)
        now = int(issuer.clock())
        grants = issuer.list_grants()
        issuer.store.index.ensure(lambda: [(s, h) for s, h, _ in grants])  # the same read rebuilds the user index
        for serial, header, revoked in grants:
            if header is None or revoked is not None or header["expires"] <= now:
                continue
            node = self.channel.node_of(serial)
            if node is not None:
                self._delivered[serial] = (header["user"], node)
        self._opened = True

    # -- spawn ----------------------------------------------------------------------------
    async def attach(self, *, user: str, pod: PodGetter, started: asyncio.Future[Any] | None = None) -> Attached | None:
        """Deliver ``user``'s grant for the pod ``pod()`` returns and wait until it is mounted.

        None when the pod's decision names no storage. ``started`` (the spawner's own start)
        is watched while waiting: if it fails first, its error is raised instead.
        """
        await asyncio.to_thread(self.open)
        manifest = await self._until("the pod to be given a node", self.schedule_timeout, started,
                                     lambda: _scheduled(pod()))
        try:
            record = read_storage_record(manifest)
        except ValueError as exc:
            raise GrantNotDelivered(f"your storage was not attached: {exc}") from None
        if record is None:
            return None
        node = str(manifest["spec"]["nodeName"])
        grant = await asyncio.to_thread(self._issue, user, record)
        try:
            await asyncio.to_thread(self._send, grant, node)
            status = await self._until(f"the node agent on {node} to mount {record.fileset}", self.mount_timeout,
                                       started, lambda: self._answer(grant.serial))
            if not status.startswith("mounted"):
                raise GrantNotDelivered(f"your storage was not attached: the node agent on {node} {status}")
        except BaseException:
            await self.detach(user=user, reason="spawn failed")
            raise
        self.start_background()
        return Attached(serial=grant.serial, node=node, fileset=grant.fileset, mode=grant.mode,
                        mount_path=grant.mount_path, expires=grant.expires, status=status)

    def _issue(self, user: str, record: StorageRecord) -> Grant:
        issuer = self.issuer
        for serial in issuer.live_serials(user=user):  # one live grant per user, as in the embedded mode
            issuer.revoke(serial=serial, reason="replaced by a new spawn")
        try:
            return issuer.issue(user=user, uid=record.uid, gid=record.gid, fileset=record.fileset,
                                mode=record.mode,  # type: ignore[arg-type]
                                mount_path=record.mount_path).grant
        except CredentialError as exc:
            raise GrantNotDelivered(f"your storage was not attached: the decided grant is invalid ({exc})") from None

    def _send(self, grant: Grant, node: str) -> None:
        try:
            self.channel.deliver(self.issuer, grant, node=node)
        except Misconfigured as exc:
            raise GrantNotDelivered(f"your storage was not attached: {exc}") from None
        self._delivered[grant.serial] = (grant.user, node)

    def _answer(self, serial: str) -> str | None:
        status = self.channel.status(serial)
        return status if status and (status.startswith("mounted") or status.startswith("refused")) else None

    async def _until(self, what: str, timeout: float, started: asyncio.Future[Any] | None,
                     check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if started is not None and started.done() and not started.cancelled() and started.exception() is not None:
                started.result()  # the spawner's own failure comes first
            found = await asyncio.to_thread(check)
            if found:
                return found
            if time.monotonic() >= deadline:
                raise GrantNotDelivered(f"your storage was not attached: no answer within {timeout:.0f} s while "
                                        f"waiting for {what} (is the jovial-guard node agent running there?)")
            await asyncio.sleep(self.poll_interval)

    # -- stop and revocation ----------------------------------------------------------------
    async def detach(self, *, user: str, reason: str = "server stopped") -> list[str]:
        """Revoke ``user``'s grants and delete their Secrets (the agent unmounts)."""
        await asyncio.to_thread(self.open)
        serials = await asyncio.to_thread(self.issuer.revoke, user=user, reason=reason)
        mine = [s for s, (owner, _node) in list(self._delivered.items()) if owner == user]
        await asyncio.to_thread(self._withdraw, sorted(set(serials) | set(mine)))
        return serials

    def _on_revoked(self, revoked: list[Revocation]) -> None:
        """Issuer listener: a grant revoked in this process loses its Secret now."""
        self._withdraw([r.serial for r in revoked if r.serial in self._delivered])

    def _withdraw(self, serials: list[str]) -> None:
        for serial in serials:
            try:
                self.channel.withdraw(serial)
            except JovialGuardError as exc:  # the next tick tries again
                self.log.warning("grant Secret %s not withdrawn yet: %s", serial, exc)
                continue
            self._delivered.pop(serial, None)

    def tick(self) -> None:
        """Withdraw what was revoked elsewhere; renew live grants past half their life."""
        issuer = self.issuer
        now = int(issuer.clock())
        self._withdraw([s for s in list(self._delivered) if issuer.revocations.get(s) is not None])
        for serial, (_user, node) in list(self._delivered.items()):
            try:
                grant = issuer.load(serial)
                if grant.expires <= now:
                    self._withdraw([serial])
                elif grant.expires - now <= (grant.expires - grant.issued) // 2:
                    self.channel.deliver(issuer, issuer.renew(serial).grant, node=node)
            except JovialGuardError as exc:
                self.log.warning("storage grant %s not renewed: %s", serial, exc)

    def start_background(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                self.log.exception("storage grant round failed")


def _scheduled(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    return pod if pod and (pod.get("spec") or {}).get("nodeName") else None
