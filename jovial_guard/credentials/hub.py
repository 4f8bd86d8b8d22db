"""Storage credentials in the hub: ``c.StorageCredentials.*`` and what the spawn hook calls.

The embedded stack runs the issuer and the node agent in the hub process (one node). At
spawn the hook renders :meth:`StorageCredentials.plan_for_spawn` (the staging directory's
volume goes into the rendered container settings), then :meth:`attach_planned` issues a
grant (stored only as an envelope), seals it to the agent's public key, and the agent opens,
checks and mounts the fileset on the user's staging directory, which the container sees. The
container never receives the grant, the token or any key. At stop, :meth:`detach` revokes
the user's grants (which unmounts). A background task renews live grants and sweeps
expired or revoked mounts.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Integer, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from .. import paths
from ..hardening.userns import IdMap
from .agent import NodeAgent
from .backends.bind import BindBackend, staging_volume
from .delivery import load_or_create_agent_key
from .errors import CredentialError, GrantRefused
from .grant import Grant
from .issuer import DEFAULT_LIFETIME, Issuer


@dataclass(frozen=True)
class StoragePlan:
    """One spawn's storage, decided and rendered before anything is mounted."""

    user: str
    uid: int
    gid: int
    fileset: str
    mode: str
    mount_path: str
    #: The DockerSpawner ``volumes`` entry: the user's staging directory, read-only.
    volume: dict[str, dict[str, str]]
    #: The user's container id mapping; the fileset mount is idmapped through it.
    id_map: IdMap | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["id_map"] = self.id_map.to_json() if self.id_map is not None else None
        return out


class StorageCredentials(SingletonConfigurable):
    """Per-user storage grants for spawned servers (used when ``c.JovialGuard.storage_enabled``)."""

    state_dir = Unicode(
        config=True,
        help="""Issued grants (envelopes only) and the revocation list. Default
        ``HUB_STATE/credentials`` (see :mod:`jovial_guard.paths`). Example: ``/var/lib/jovial-guard/credentials``.""",
    )

    @default("state_dir")
    def _default_state(self) -> str:
        return str(paths.credentials_state_dir())

    key_dir = Unicode(
        config=True,
        help="""Key-encryption keys (``kek.json``, mode 0600) and the issuer's signing key,
        kept apart from ``state_dir``. Default ``HUB_STATE/credentials-keys``.
        Example: ``/etc/jovial-guard/keys``.""",
    )

    @default("key_dir")
    def _default_keys(self) -> str:
        return str(paths.credentials_key_dir())

    agent_key_path = Unicode(
        config=True,
        help="""The node agent's X25519 private key (created on first use, mode 0600).
        Default ``HUB_STATE/credentials-agent/agent.key``.""",
    )

    @default("agent_key_path")
    def _default_agent_key(self) -> str:
        return str(paths.credentials_agent_key())

    agent_id = Unicode(config=True, help="This node's agent id (bound into sealed grants). Default: the host name.")

    @default("agent_id")
    def _default_agent_id(self) -> str:
        return socket.gethostname()

    storage_root = Unicode(
        config=True,
        help="""Root of the file system filesets live under (``bind`` backend); a fileset
        ``home/alice`` is ``<storage_root>/home/alice``. Default ``STATE/lustre-sim``.
        Example: ``/srv/jovial-guard/lustre`` or a Lustre client mount.""",
    )

    @default("storage_root")
    def _default_storage_root(self) -> str:
        return str(paths.storage_root())

    staging_root = Unicode(
        config=True,
        help="""Shared mount holding each user's staging directory (mounted read-only,
        rslave, into their container). Kept outside ``state_dir`` so removing a state
        directory can never recurse into a mounted fileset. Default
        ``/run/jovial-guard/storage/<hash of state_dir>/staging`` (one per hub).""",
    )

    @default("staging_root")
    def _default_staging(self) -> str:
        return str(self._run_dir() / "staging")

    work_root = Unicode(
        config=True,
        help="""Private mount for the agent's intermediate binds. Default
        ``/run/jovial-guard/storage/<hash of state_dir>/work``.""",
    )

    @default("work_root")
    def _default_work(self) -> str:
        return str(self._run_dir() / "work")

    def _run_dir(self) -> Path:
        tag = hashlib.sha256(str(Path(self.state_dir).resolve()).encode()).hexdigest()[:12]
        return Path("/run/jovial-guard/storage") / tag

    lifetime = Integer(
        DEFAULT_LIFETIME,
        config=True,
        help="Seconds a grant lives before it must be renewed; default 28800 (a working day). Example: 3600.",
    )

    @validate("lifetime")
    def _lifetime_positive(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 60:
            raise ValueError("StorageCredentials.lifetime must be at least 60 seconds (default 28800)")
        return value

    sweep_interval = Integer(
        10,
        config=True,
        help="""Seconds between agent sweeps (expiry, revocations written by other processes
        such as the CLI) and renewals. Revocations made in the hub process act at once.
        Default 10.""",
    )
    create_filesets = Bool(
        True,
        config=True,
        help="Create a missing fileset directory (owned by the grant's uid:gid, mode 0700). Default True.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._issuer: Issuer | None = None
        self._agent: NodeAgent | None = None
        self._task: asyncio.Task[None] | None = None
        self._pruned = 0

    # -- components, opened on first use ------------------------------------------------
    @property
    def issuer(self) -> Issuer:
        if self._issuer is None:
            self._issuer = Issuer.from_directory(
                Path(self.state_dir), keyring_path=Path(self.key_dir) / "kek.json", lifetime=self.lifetime, create=True
            )
        return self._issuer

    @property
    def agent(self) -> NodeAgent:
        if self._agent is None:
            backend = BindBackend(
                storage_root=Path(self.storage_root),
                staging_root=Path(self.staging_root),
                work_root=Path(self.work_root),
                create_filesets=self.create_filesets,
            )
            backend.prepare()
            self._agent = NodeAgent(
                agent_id=self.agent_id,
                private_key=load_or_create_agent_key(Path(self.agent_key_path)),
                issuer_key=self.issuer.signer.public_key(),
                revocations=self.issuer.revocations,
                backend=backend,
            )
            self.issuer.listeners.append(self._agent.on_revoked)
            # Mounts left by a previous run (crash) have no grant here: remove them now.
            self._agent.sweep()
            atexit.register(backend.teardown)
        return self._agent

    # -- spawn / stop ---------------------------------------------------------------------
    def attach_sync(
        self, *, user: str, uid: int, gid: int, fileset: str, mode: str, mount_path: str,
        id_map: IdMap | None = None,
    ) -> tuple[Grant, dict[str, Any]]:
        """Issue, seal, deliver, mount; returns the grant and the DockerSpawner volume entry."""
        issuer, agent = self.issuer, self.agent
        for serial in issuer.live_serials(user=user):  # one live grant per user
            issuer.revoke(serial=serial, reason="replaced by a new spawn")
        issued = issuer.issue(
            user=user,
            uid=uid,
            gid=gid,
            fileset=fileset,
            mode=mode,  # type: ignore[arg-type]
            mount_path=mount_path,
        )
        sealed = issuer.seal_for(issued.grant, agent_key=agent.public_key, agent_id=agent.agent_id)
        grant = agent.accept(sealed, user=user, id_map=id_map)
        volume = agent.backend.container_volume(user=user, mount_parent=grant.mount_parent)
        return grant, volume

    def plan_for_spawn(self, *, user: str, spec: Any, id_map: IdMap | None = None) -> StoragePlan | None:
        """What the decision's ``spec.storage`` will mount for ``user`` (pure; None: no storage).

        The spawn renderer puts ``plan.volume`` into the container settings, so the engine
        receives exactly the rendered volumes; :meth:`attach_planned` then issues the grant
        and mounts. Raises MountError for a user name that is not a safe path component.
        """
        storage = getattr(spec, "storage", None)
        if storage is None:
            return None
        mount_parent = str(storage.mount_path).rsplit("/", 1)[0] or "/"
        return StoragePlan(
            user=user, uid=int(spec.uid), gid=int(spec.gid), fileset=str(storage.fileset),
            mode=str(storage.mode), mount_path=str(storage.mount_path),
            volume=staging_volume(Path(self.staging_root), user=user, mount_parent=mount_parent),
            id_map=id_map,
        )

    async def attach_planned(self, plan: StoragePlan) -> dict[str, Any]:
        """Issue, seal, deliver and mount ``plan``; the record kept for audit (no secrets).

        The staging volume the agent prepares must be the one rendered into the container:
        anything else is refused (and the grant revoked) rather than started.
        """
        grant, volume = await asyncio.to_thread(
            self.attach_sync, user=plan.user, uid=plan.uid, gid=plan.gid, fileset=plan.fileset,
            mode=plan.mode, mount_path=plan.mount_path, id_map=plan.id_map,
        )
        if volume != plan.volume:
            await self.detach(user=plan.user, reason="staging volume differs from the rendered one")
            raise CredentialError(f"staging volume {volume} is not the rendered {plan.volume}")
        self.start_background()
        return {
            "serial": grant.serial,
            "fileset": grant.fileset,
            "mode": grant.mode,
            "mount_path": grant.mount_path,
            "expires": grant.expires,
        }

    async def detach_for_spawn(self, spawner: Any) -> None:
        """What ``JovialGuard.post_stop`` calls: revoke the user's grants, unmount."""
        try:
            await self.detach(user=str(spawner.user.name), reason="server stopped")
        except CredentialError as exc:  # never block a stop; the sweep retries the unmount
            self.log.warning("storage detach for %s failed: %s", spawner.user.name, exc)

    async def detach(self, *, user: str, reason: str = "server stopped") -> list[str]:
        """Stop-hook entry: revoke the user's grants (the agent unmounts at once)."""
        serials = await asyncio.to_thread(self.issuer.revoke, user=user, reason=reason)
        await asyncio.to_thread(self.agent.withdraw, user=user, reason=reason)
        return serials

    # -- renewal and sweeping ---------------------------------------------------------------
    def tick(self) -> None:
        """One round: renew grants of mounted users past half their life; sweep the rest."""
        agent, issuer = self.agent, self.issuer
        now = int(issuer.clock())
        for mount in agent.active():
            grant = agent.holding(mount.user)
            if grant is None or grant.expires - now > (grant.expires - grant.issued) // 2:
                continue
            try:
                renewed = issuer.renew(grant.serial)
                agent.accept(
                    issuer.seal_for(renewed.grant, agent_key=agent.public_key, agent_id=agent.agent_id), user=mount.user
                )
            except (GrantRefused, CredentialError) as exc:
                self.log.warning("storage grant %s not renewed: %s", grant.serial, exc)
        agent.sweep()
        if now - self._pruned >= 3600:
            issuer.prune()
            self._pruned = now

    def start_background(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                self.log.exception("storage credentials sweep failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
