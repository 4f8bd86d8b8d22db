"""`JovialGuard`: the JupyterHub pre-spawn hook that asks the policy and hardens the spawn.

Wired in ``jupyterhub_config.py``::

    from jovial_guard.spawn import GuardedDockerSpawner, pre_spawn_hook, post_stop_hook
    c.JupyterHub.spawner_class = GuardedDockerSpawner
    c.Spawner.pre_spawn_hook = pre_spawn_hook
    c.Spawner.post_stop_hook = post_stop_hook
    c.JovialGuard.opa_url = "http://127.0.0.1:8181"

For every spawn the hook builds a pod-shaped Workload (user, groups, admin, image, profile),
asks OPA through :class:`~jovial_guard.policy.engine.PolicyEngine`, and either raises
:class:`SpawnRefused` (whose message JupyterHub shows on the spawn page and returns from the
REST API) or creates the user's egress namespace and renders the SecuritySpec onto the
DockerSpawner. Every failure on the way refuses the spawn: nothing runs unhardened.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from typing import Any, Callable

from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Integer, List, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from ..decision import ENGINE_UNAVAILABLE, Decision
from ..errors import JovialGuardError
from ..hardening import apparmor, seccomp
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces
from ..hardening.render_docker import UnrenderableSpec, render_docker
from ..policy.client import OpaConnection, OpaEndpoint
from ..policy.engine import DecisionListener, PolicyEngine
from ..workload import Workload
from .network import NetworkUnavailable, UserNetworks
from .workload import requested_profile, spawn_workload


class StartupRefused(JovialGuardError):
    """The hub must not start: a piece of the hardening is missing. The message says which."""


class SpawnRefused(web.HTTPError):
    """A spawn the guard refuses; JupyterHub relays ``jupyterhub_message`` to the user.

    ``rule`` is the policy rule id (or ``jovial-guard/...`` for a refusal made here).
    """

    def __init__(self, message: str, *, rule: str, status_code: int = 403) -> None:
        super().__init__(status_code, "%s", message)
        self.rule = rule
        self.jupyterhub_message = message
        self.decision: Decision | None = None

    def __str__(self) -> str:
        return self.jupyterhub_message


def _import_callable(spec: Any) -> Callable[..., Any]:
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    module, _, attr = str(spec).partition(":")
    target = getattr(importlib.import_module(module), attr)
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


#: What a user reads while the policy engine cannot answer: no URL, no exception class
#: (those go to the hub log), and what to do.
ENGINE_UNAVAILABLE_MESSAGE = (
    "Your server was not started: the policy service is restarting, try again in a minute. "
    "[policy-engine-unavailable]"
)


def _refusal(decision: Decision, spawner: Any) -> SpawnRefused:
    """The refusal a denied or undecidable spawn raises: the policy's own message for a
    denial (it says what to change), a plain one when the engine could not decide."""
    if any(r.rule == ENGINE_UNAVAILABLE for r in decision.reasons):
        spawner.log.warning("jovial_guard: no decision for %s: %s", spawner._log_name, decision.message())
        return SpawnRefused(ENGINE_UNAVAILABLE_MESSAGE, rule=ENGINE_UNAVAILABLE, status_code=503)
    return SpawnRefused(
        f"Your server was not started: {decision.message()}",
        rule=decision.reasons[0].rule if decision.reasons else "denied",
    )


class JovialGuard(SingletonConfigurable):
    """Policy decision and hardening for every JupyterHub spawn (``c.JovialGuard.*``)."""

    opa_url = Unicode(
        "",
        config=True,
        help="""URL of the OPA that decides spawns, e.g. ``http://127.0.0.1:8181``.
        Required: with no OPA the hub refuses to start (fail closed).""",
    )
    opa_token = Unicode(
        "", config=True, help="Bearer token for OPA's API (empty: none). Example: ``s3cret``."
    )
    opa_ca_file = Unicode(
        "", config=True,
        help="CA bundle to trust for an https OPA (empty: the system store).",
    )
    deadline = Float(
        2.0, config=True,
        help="Seconds OPA has to answer one spawn; later counts as a denial. Default 2.0.",
    )

    @validate("deadline")
    def _deadline_positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise ValueError("JovialGuard.deadline must be positive seconds, e.g. 2.0")
        return value

    default_profile = Unicode(
        "default", config=True,
        help="Profile used when the user chose none (``default``, ``large-memory``, ``gpu``).",
    )
    seccomp_profile_path = Unicode(
        config=True,
        help="""The notebook seccomp profile file handed to the engine
        (``security_opt=seccomp=<path>``). Default: the repository's
        ``profiles/seccomp/notebook.json``. Missing or weak: start-up and spawns refuse.""",
    )

    @default("seccomp_profile_path")
    def _default_seccomp(self) -> str:
        return str(seccomp.notebook_profile_path())

    apparmor_profile_path = Unicode(
        config=True,
        help="""The notebook AppArmor profile file; validated with apparmor_parser at
        start-up (a profile that does not compile stops the hub). Applied only where the
        kernel has AppArmor; elsewhere each spawn records it as unsupported.""",
    )

    @default("apparmor_profile_path")
    def _default_apparmor(self) -> str:
        return str(apparmor.notebook_profile_path())

    apparmor_supported = Bool(
        config=True,
        help="Whether the host enforces AppArmor. Default: asked from the kernel.",
    )

    @default("apparmor_supported")
    def _default_apparmor_supported(self) -> bool:
        return apparmor.host_supports_apparmor().supported

    engine_socket = Unicode(
        "/run/jovial-guard/podman.sock", config=True,
        help="""Unix socket of the container engine's Docker API (the project's podman
        service). Checked at start-up: missing means the hub refuses to start.""",
    )
    egress = Bool(
        True, config=True,
        help="""Give each user container its own network namespace with nftables egress
        rules from the decision. Turning it off gives containers no network at all
        (``network_mode=none``), never an unfiltered one.""",
    )
    netns_prefix = Unicode(
        "jg", config=True,
        help="""Prefix of the project's network namespaces (``jg-egress``, ``jg-u-alice-...``).
        A second hub on the same machine needs its own prefix and ``egress_pool``.""",
    )
    egress_pool = Unicode(
        DEFAULT_POOL, config=True,
        help="IPv4 range (/20 or larger) for the egress namespaces. Default 10.213.0.0/16.",
    )
    hub_connect_ip = Unicode(
        config=True,
        help="""Address user containers reach the hub API on: the hub side of the egress
        router link (the last /30 of ``egress_pool``, e.g. 10.213.255.253). The hub must
        listen there (``c.JupyterHub.hub_bind_url``).""",
    )

    @default("hub_connect_ip")
    def _default_hub_connect_ip(self) -> str:
        return EgressNamespaces(self.netns_prefix, pool=self.egress_pool).hub_address
    hub_port = Integer(
        8081, config=True, help="Port of the hub API user containers may reach. Default 8081.",
    )
    home_volume_template = Unicode(
        "jovial-guard-home-{username}", config=True,
        help="Name of each user's home volume; ``{username}`` is the escaped user name.",
    )
    tmpfs_size = Unicode("512m", config=True, help="Size of each writable tmpfs, e.g. ``512m``.")
    decision_listeners = List(
        AnyTrait(), config=True,
        help="""Callables ``(workload, decision, seconds)`` (or ``"module:attr"`` strings)
        told about every spawn decision: decision log, audit, metrics. Must not raise.""",
    )
    spawn_listeners = List(
        AnyTrait(), config=True,
        help="""Callables ``(spawner, record)`` told about every admitted spawn with the
        hardening record (what was applied, what the host cannot do).""",
    )
    storage_enabled = Bool(
        False, config=True,
        help="""Give each user a storage grant at spawn (``jovial_guard.credentials``,
        configured by ``c.StorageCredentials.*``): the policy's fileset appears at the
        decision's ``storage.mount_path`` and the grant is revoked at stop. Off by default;
        the embedded ``jupyterhub_config.py`` turns it on. A grant that cannot be issued or
        mounted refuses the spawn.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine: PolicyEngine | None = None
        self._connection: OpaConnection | None = None
        self._engine_lock: asyncio.Lock | None = None
        self._networks: UserNetworks | None = None
        self.hook_seconds: list[float] = []

    # -- start-up -----------------------------------------------------------------------
    def check_startup(self) -> None:
        """Raise :class:`StartupRefused` naming every missing piece (called by the config)."""
        problems: list[str] = []
        if not self.opa_url:
            problems.append("c.JovialGuard.opa_url is not set: spawns need a policy engine")
        else:
            try:
                OpaEndpoint(self.opa_url, self.opa_token or None, self.opa_ca_file or None).parts()
                problem = _opa_health(self.opa_url, self.opa_token, self.opa_ca_file)
                if problem:
                    problems.append(problem)
            except JovialGuardError as exc:
                problems.append(str(exc))
        try:
            seccomp.validate_profile_file(self.seccomp_profile_path)
        except JovialGuardError as exc:
            problems.append(f"{exc} (c.JovialGuard.seccomp_profile_path)")
        try:
            apparmor.validate_profile(self.apparmor_profile_path)
        except JovialGuardError as exc:
            problems.append(f"{exc} (c.JovialGuard.apparmor_profile_path)")
        if not Path(self.engine_socket).is_socket():
            problems.append(
                f"container engine socket {self.engine_socket} is missing: start the project's "
                "podman service (jovial-guard up does) or set c.JovialGuard.engine_socket"
            )
        if self.egress and self.hub_connect_ip != self.networks().hub_address:
            problems.append(
                f"c.JovialGuard.hub_connect_ip {self.hub_connect_ip} is not the egress router's "
                f"hub address {self.networks().hub_address}: user containers could not reach "
                "the hub"
            )
        if self.egress and not problems:
            try:
                self.networks().ensure_router()
            except JovialGuardError as exc:
                problems.append(f"the egress router namespace could not be set up: {exc}")
        if problems:
            raise StartupRefused(
                "jovial_guard refuses to start the hub:\n  - " + "\n  - ".join(problems)
            )

    # -- policy -------------------------------------------------------------------------
    async def engine(self) -> PolicyEngine:
        """The PolicyEngine, opened on first use on the hub's event loop."""
        if self._engine_lock is None:
            self._engine_lock = asyncio.Lock()
        async with self._engine_lock:
            if self._engine is None:
                connection = OpaConnection(
                    OpaEndpoint(self.opa_url, self.opa_token or None, self.opa_ca_file or None),
                    timeout=self.deadline,
                )
                await connection.__aenter__()
                listeners: list[DecisionListener] = [
                    _import_callable(x) for x in self.decision_listeners
                ]
                self._connection = connection
                self._engine = PolicyEngine(connection, deadline=self.deadline, listeners=listeners)
        return self._engine

    def add_decision_listener(self, listener: DecisionListener) -> None:
        """Attach a listener at run time (audit/decision-log helpers use this)."""
        self.decision_listeners = [*self.decision_listeners, listener]
        if self._engine is not None:
            self._engine.listeners.append(listener)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._engine = None
        self._connection = None

    def networks(self) -> UserNetworks:
        if self._networks is None:
            self._networks = UserNetworks(
                prefix=self.netns_prefix, pool=self.egress_pool, hub_port=self.hub_port
            )
        return self._networks

    # -- the hook -----------------------------------------------------------------------
    def workload_for(self, spawner: Any) -> Workload:
        user = spawner.user
        groups = tuple(sorted(g.name for g in getattr(user, "groups", []) or []))
        return spawn_workload(
            username=str(user.name),
            groups=groups,
            admin=bool(getattr(user, "admin", False)),
            image=str(spawner.image),
            profile=requested_profile(spawner.user_options, default=self.default_profile),
            server_name=str(getattr(spawner, "name", "") or ""),
        )

    async def pre_spawn(self, spawner: Any) -> dict[str, Any]:
        """Decide and harden one spawn; raise SpawnRefused on anything but a clean allow."""
        started = time.perf_counter()
        try:
            record = await self._pre_spawn(spawner)
        finally:
            self.hook_seconds.append(time.perf_counter() - started)
        record["hook_ms"] = round(self.hook_seconds[-1] * 1000, 1)
        spawner.log.info(
            "jovial_guard: admitted %s profile=%s revision=%s apparmor=%s hook_ms=%.1f",
            spawner._log_name, record["profile"], record["policy_revision"],
            record["hardening"]["apparmor"]["status"], record["hook_ms"],
        )
        return record

    async def _pre_spawn(self, spawner: Any) -> dict[str, Any]:
        spawner.guard_hardened = False
        try:
            seccomp_path = str(seccomp.validate_profile_file(self.seccomp_profile_path))
        except JovialGuardError as exc:
            raise SpawnRefused(
                f"The notebook security profile is unavailable ({exc}), so no server can be "
                "started. Tell the platform admins.",
                rule="jovial-guard/seccomp-profile-missing", status_code=503,
            ) from exc
        try:
            workload = self.workload_for(spawner)
        except JovialGuardError as exc:
            raise SpawnRefused(f"[malformed-input] {exc}", rule="malformed-input", status_code=400) from exc
        decision = await (await self.engine()).decide(workload)
        if not decision.allowed or decision.spec is None:
            refused = _refusal(decision, spawner)
            refused.decision = decision
            raise refused
        username = spawner.escaped_name
        network_mode = "none"
        address = ""
        if self.egress:
            try:
                handle = await asyncio.to_thread(
                    self.networks().create, username, decision.spec.egress
                )
            except (NetworkUnavailable, OSError) as exc:
                raise SpawnRefused(
                    f"Your server was not started: its network could not be set up ({exc}). "
                    "Try again; if it persists, tell the platform admins.",
                    rule="jovial-guard/egress-unavailable", status_code=503,
                ) from exc
            network_mode, address = handle.network_mode, handle.container_address
        try:
            rendered = render_docker(
                decision.spec,
                seccomp_path=seccomp_path,
                apparmor_supported=self.apparmor_supported,
                network_mode=network_mode,
                home_volume=self.home_volume_template.format(username=username),
                tmpfs_size=self.tmpfs_size,
            )
        except UnrenderableSpec as exc:
            if self.egress:
                await asyncio.to_thread(self.networks().destroy, username)
            raise SpawnRefused(
                f"Your server was not started: {exc}", rule="jovial-guard/unrenderable"
            ) from exc
        apply_rendered(spawner, rendered, address=address)
        record = {
            "decision_id": decision.decision_id,
            "policy_revision": decision.policy_revision,
            "profile": decision.spec.profile,
            "warnings": list(decision.warnings),
            "mode": decision.mode,
            "hardening": rendered["hardening"],
            "container_address": address,
        }
        spawner.guard_record = record
        if decision.warned or decision.audited:
            spawner.log.warning("jovial_guard: %s admitted in %s mode: %s", spawner._log_name, decision.mode,
                                "; ".join(f"[{r.rule}] {r.message}" for _, r in decision.violations()))
        if self.storage_enabled:
            from ..credentials.hub import StorageCredentials

            try:
                record["storage"] = await StorageCredentials.instance(
                    config=spawner.config, log=spawner.log
                ).attach_for_spawn(spawner, decision.spec)
            except (JovialGuardError, OSError) as exc:
                if self.egress:
                    await asyncio.to_thread(self.networks().destroy, username)
                raise SpawnRefused(
                    f"Your server was not started: your storage could not be attached ({exc}). "
                    "Tell the platform admins.",
                    rule="jovial-guard/storage-unavailable", status_code=503,
                ) from exc
        for listener in self.spawn_listeners:
            try:
                result = _import_callable(listener)(spawner, record)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - a listener never changes the outcome
                spawner.log.exception("jovial_guard spawn listener failed")
        return record

    async def post_stop(self, spawner: Any) -> None:
        spawner.guard_hardened = False
        if self.storage_enabled:
            from ..credentials.hub import StorageCredentials

            await StorageCredentials.instance(config=spawner.config, log=spawner.log).detach_for_spawn(spawner)
        if self.egress:
            await asyncio.to_thread(self.networks().destroy, spawner.escaped_name)


def apply_rendered(spawner: Any, rendered: dict[str, Any], *, address: str) -> None:
    """Set the rendered configuration on a (Guarded)DockerSpawner, replacing, not merging."""
    spawner.extra_host_config = dict(rendered["host_config"])
    spawner.extra_create_kwargs = {"user": rendered["user"]}
    spawner.volumes = dict(rendered["volumes"])
    spawner.read_only_volumes = {}
    spawner.mounts = []
    spawner.mem_limit = rendered["mem_limit"]
    spawner.cpu_limit = None  # nano_cpus in host_config; cpu_quota as well would conflict
    spawner.use_internal_ip = True  # no host port bindings: the hub reaches the namespace
    spawner.guard_address = address
    spawner.guard_hardened = True


def _opa_health(url: str, token: str, ca_file: str) -> str | None:
    """A synchronous start-up probe of OPA's /health; an error message or None."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(
            url.rstrip("/") + "/health", headers=headers, timeout=3,
            verify=ca_file or True,
        )
    except requests.RequestException as exc:
        return f"the policy engine (OPA) at {url} is unreachable: {type(exc).__name__}"
    if resp.status_code != 200:
        return f"the policy engine (OPA) at {url} is not healthy (HTTP {resp.status_code})"
    return None


def _guard(spawner: Any) -> JovialGuard:
    return JovialGuard.instance(config=spawner.config, log=spawner.log)


async def pre_spawn_hook(spawner: Any) -> None:
    """``c.Spawner.pre_spawn_hook``: decide and harden, or refuse with the reason."""
    await _guard(spawner).pre_spawn(spawner)


async def post_stop_hook(spawner: Any) -> None:
    """``c.Spawner.post_stop_hook``: remove the user's network namespace."""
    await _guard(spawner).post_stop(spawner)


__all__ = [
    "JovialGuard",
    "SpawnRefused",
    "StartupRefused",
    "apply_rendered",
    "pre_spawn_hook",
    "post_stop_hook",
]

