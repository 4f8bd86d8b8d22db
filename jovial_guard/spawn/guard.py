"""`JovialGuard`: the JupyterHub pre-spawn hook that asks the policy and hardens the spawn.

Wired in ``jupyterhub_config.py``::

    from jovial_guard.spawn import GuardedDockerSpawner, pre_spawn_hook, post_stop_hook
    c.JupyterHub.spawner_class = GuardedDockerSpawner
    c.Spawner.pre_spawn_hook = pre_spawn_hook
    c.Spawner.post_stop_hook = post_stop_hook
    c.JovialGuard.opa_url = "http://127.0.0.1:8181"

For every spawn the hook decides, renders, then applies:

1. decide: a pod-shaped Workload (user, groups, admin, the image the container will really
   start, profile) goes to OPA through :class:`~jovial_guard.policy.engine.PolicyEngine`;
   anything but an allow raises :class:`SpawnRefused` (whose message JupyterHub shows on the
   spawn page and returns from the REST API);
2. render: :func:`~.plan.render_spawn` turns the decision into one pure
   :class:`~.plan.SpawnPlan` (container settings, namespace and nftables plan, storage
   mounts, the hardening record);
3. apply: :func:`~.apply.apply_plan` carries the plan out and undoes it on any failure.

Every failure on the way refuses the spawn: nothing runs unhardened.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tornado import web

from ..decision import Decision
from ..errors import JovialGuardError
from ..hardening import apparmor, seccomp
from ..hardening.userns import IdMap, UserRanges, host_range
from ..policy.client import OpaConnection, OpaEndpoint
from ..policy.engine import DecisionListener, DecisionSource, PolicyEngine
from ..policy.health import bundle_health_problem, opa_health_problem
from ..workload import Workload
from .apply import ApplyFailed, apply_plan, in_network_thread
from .image import final_image
from .listeners import import_callable as _import_callable
from .listeners import tell_decision_listeners, tell_spawn_listeners
from .network import UserNetworks
from .plan import SpawnPlan, SpawnRecord, render_spawn
from .queue import StartQueue
from .refusals import SpawnRefused, StartupRefused, decision_refusal
from .seccomp_files import SeccompFiles
from .settings import GuardSettings
from .steps import StepClock
from .warmup import warm_policy_soon, warm_storage
from .workload import requested_profile, spawn_workload

if TYPE_CHECKING:
    from ..credentials.hub import StorageCredentials
    from ..policy.wasm_engine import WasmConnection

#: How the hub reports to the bundle service it follows (``POD/WORKER``, as a webhook
#: worker does). Fixed rather than per process: a restarted hub replaces its own entry, so
#: a deploy right after a restart does not wait for the previous process's report to age.
HUB_WORKER_ID = "jupyterhub/hub"


class JovialGuard(GuardSettings):
    """Policy decision and hardening for every JupyterHub spawn (``c.JovialGuard.*``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine: PolicyEngine | None = None
        self._connection: OpaConnection | None = None
        self._bundle_task: asyncio.Task[None] | None = None
        self._engine_lock: asyncio.Lock | None = None
        self._networks: UserNetworks | None = None
        self._seccomp_files: SeccompFiles | None = None
        self._ranges: UserRanges | None = None
        self._queue: StartQueue | None = None
        #: The latest hook durations (bounded: a long-running hub must not grow it forever).
        self.hook_seconds: deque[float] = deque(maxlen=4096)

    # -- start-up -----------------------------------------------------------------------
    def check_startup(self) -> None:
        """Raise :class:`StartupRefused` naming every missing piece (called by the config)."""
        problems: list[str] = []
        if self.policy_engine == "wasm":
            problems += self._compiled_policy_problems()
        elif not self.opa_url:
            problems.append("c.JovialGuard.opa_url is not set: spawns need a policy engine")
        else:
            try:
                OpaEndpoint(self.opa_url, self.opa_token or None, self.opa_ca_file or None).parts()
                problem = opa_health_problem(self.opa_url, self.opa_token, self.opa_ca_file)
                if problem:
                    problems.append(problem)
            except JovialGuardError as exc:
                problems.append(str(exc))
        try:
            seccomp.validate_profile_dir(self.seccomp_profile_dir)
        except JovialGuardError as exc:
            problems.append(f"{exc} (c.JovialGuard.seccomp_profile_dir)")
        try:
            apparmor.validate_profile(self.apparmor_profile_path)
        except JovialGuardError as exc:
            problems.append(f"{exc} (c.JovialGuard.apparmor_profile_path)")
        if not Path(self.engine_socket).is_socket():
            problems.append(
                f"container engine socket {self.engine_socket} is missing: start the project's "
                "podman service (jovial-guard up does) or set c.JovialGuard.engine_socket"
            )
        if self.user_namespaces:
            try:
                self.user_ranges()
            except JovialGuardError as exc:
                problems.append(f"{exc} (c.JovialGuard.user_namespaces)")
        if self.egress and self.hub_connect_ip != self.networks().hub_address:
            problems.append(
                f"c.JovialGuard.hub_connect_ip {self.hub_connect_ip} is not the egress router's "
                f"hub address {self.networks().hub_address}: user containers could not reach "
                "the hub"
            )
        if self.egress and not problems:
            try:
                self.networks().ensure_router()
                self.networks().start_spares()
            except JovialGuardError as exc:
                problems.append(f"the egress router namespace could not be set up: {exc}")
        if self.storage_enabled and not problems:
            warm_storage(self)
        if not problems:
            warm_policy_soon(self)
        if problems:
            raise StartupRefused(
                "jovial_guard refuses to start the hub:\n  - " + "\n  - ".join(problems)
            )

    def _compiled_policy_problems(self) -> list[str]:
        """What ``policy_engine = "wasm"`` lacks: settings, the key, a bundle that verifies
        (loaded once here to say why; the loop loads it again to decide with)."""
        missing = [f"c.JovialGuard.{name}" for name in
                   ("policy_bundle_url", "policy_bundle_public_key", "policy_bundle_key_id")
                   if not getattr(self, name)]
        if missing:
            return [f"{' and '.join(missing)} not set: policy_engine 'wasm' decides with a signed bundle"]
        key = Path(self.policy_bundle_public_key)
        if not key.is_file():
            return [f"the bundle's public key {key} is missing (c.JovialGuard.policy_bundle_public_key)"]
        problem = bundle_health_problem(self.policy_bundle_url, key, self.policy_bundle_key_id)
        return [problem] if problem else []

    # -- policy -------------------------------------------------------------------------
    async def engine(self) -> PolicyEngine:
        """The PolicyEngine, opened on first use on the hub's event loop."""
        if self._engine_lock is None:
            self._engine_lock = asyncio.Lock()
        async with self._engine_lock:
            if self._engine is None:
                connection: DecisionSource
                if self.policy_engine == "wasm":
                    connection = await self._follow_bundle()
                else:
                    opa = OpaConnection(
                        OpaEndpoint(self.opa_url, self.opa_token or None, self.opa_ca_file or None),
                        timeout=self.deadline,
                    )
                    await opa.__aenter__()
                    self._connection = connection = opa
                # The hook tells the decision listeners itself, beside the spawn's other
                # work (see _decide), not the engine before it returns.
                self._engine = PolicyEngine(connection, deadline=self.deadline)
        return self._engine

    async def _follow_bundle(self) -> WasmConnection:
        """The compiled policy of the signed bundle, kept on its newest verified revision by
        a task on the hub's loop. A bundle that fails to load leaves the connection empty
        (every spawn refused) or on the previous revision; the task keeps looking."""
        from ..policy.wasm_engine import followed_bundle

        connection, watcher = followed_bundle(
            self.policy_bundle_url, public_key=Path(self.policy_bundle_public_key),
            key_id=self.policy_bundle_key_id, deadline=self.deadline, instance=HUB_WORKER_ID,
        )
        await watcher.refresh()
        self._bundle_task = asyncio.get_running_loop().create_task(watcher.follow(self.policy_bundle_poll))
        return connection

    def decision_listener_callables(self) -> list[DecisionListener]:
        return [_import_callable(x) for x in self.decision_listeners]

    def add_decision_listener(self, listener: DecisionListener) -> None:
        """Attach a listener at run time (audit/decision-log helpers use this)."""
        self.decision_listeners = [*self.decision_listeners, listener]

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._bundle_task is not None:
            self._bundle_task.cancel()
        self._engine = None
        self._connection = None
        self._bundle_task = None

    def networks(self) -> UserNetworks:
        if self._networks is None:
            self._networks = UserNetworks(
                prefix=self.netns_prefix, pool=self.egress_pool, hub_port=self.hub_port,
                spares=self.egress_spares,
            )
        return self._networks

    def user_ranges(self) -> UserRanges:
        """Users' id blocks in the project's host range (read from /etc/subuid once)."""
        if self._ranges is None:
            self._ranges = UserRanges(Path(self.userns_state_path), host_range())
        return self._ranges

    async def _user_block(self, username: str) -> IdMap | None:
        """The user's block of host ids (given on first spawn), or None when off."""
        if not self.user_namespaces:
            return None
        try:
            known = self.user_ranges().known(username)
            if known is not None:
                return known
            return await asyncio.to_thread(self.user_ranges().allocate, username)
        except (JovialGuardError, OSError) as exc:
            raise SpawnRefused(
                f"Your server was not started: its user namespace could not be set up ({exc}). "
                "Tell the platform admins.",
                rule="jovial-guard/userns-unavailable", status_code=503,
            ) from exc

    def queue(self) -> StartQueue | None:
        """The hub's start queue (``start_slots``), made on first use on the event loop."""
        if self.start_slots and self._queue is None:
            self._queue = StartQueue(self.start_slots)
        return self._queue

    # -- the hook -----------------------------------------------------------------------
    def workload_for(self, spawner: Any, *, image: str) -> Workload:
        user = spawner.user
        groups = tuple(sorted(g.name for g in getattr(user, "groups", []) or []))
        return spawn_workload(
            username=str(user.name),
            groups=groups,
            admin=bool(getattr(user, "admin", False)),
            image=image,
            profile=requested_profile(spawner.user_options, default=self.default_profile),
            server_name=str(getattr(spawner, "name", "") or ""),
        )

    async def pre_spawn(self, spawner: Any) -> dict[str, Any]:
        """Wait for a start slot, then decide, render, apply one spawn; raise SpawnRefused on
        anything but a clean allow (the slot is then given back)."""
        queue = self.queue()
        ticket = queue.enter(spawner._log_name) if queue is not None else None
        spawner.guard_ticket = ticket
        if queue is not None and ticket is not None:
            await queue.wait(ticket)
        # hook_ms is the guard's own work after the wait: decision, namespace, storage,
        # render, listeners (queued_ms is the wait).
        started = time.perf_counter()
        steps = spawner.guard_steps = StepClock()
        try:
            record = await self._pre_spawn(spawner, steps)
            record = replace(record, hook_ms=round((time.perf_counter() - started) * 1000, 1))
            doc = record.to_json()
            spawner.guard_record = doc
            with steps.step("listeners"):
                await tell_spawn_listeners([_import_callable(x) for x in self.spawn_listeners], spawner, doc)
        except BaseException:
            self.release_slot(spawner)
            raise
        finally:
            self.hook_seconds.append(time.perf_counter() - started)
        # The log's hook_ms also counts the listeners (the record's stops before them).
        nets = self._networks
        spawner.log.info(
            "jovial_guard: admitted %s profile=%s revision=%s apparmor=%s hook_ms=%.1f "
            "queued_ms=%.1f spare_namespaces_taken=%d made=%d steps=%s",
            spawner._log_name, record.profile, record.policy_revision,
            record.hardening["apparmor"]["status"], self.hook_seconds[-1] * 1000,
            ticket.waited * 1000 if ticket is not None else 0.0,
            nets.spare_hits if nets else 0, nets.spare_misses if nets else 0, steps.line(),
        )
        return doc

    def release_slot(self, spawner: Any) -> None:
        """This spawn no longer needs its start slot (server up, failed or stopped)."""
        ticket = getattr(spawner, "guard_ticket", None)
        if ticket is not None and self._queue is not None:
            self._queue.release(ticket)

    async def _pre_spawn(self, spawner: Any, steps: StepClock) -> SpawnRecord:
        spawner.guard_hardened = False
        with steps.step("decide"):
            decision, image, told = await self._decide(spawner)
        try:
            return await self._render_and_apply(spawner, decision, image, steps)
        finally:
            with steps.step("decision_listeners"):
                await told

    async def _render_and_apply(self, spawner: Any, decision: Decision, image: str,
                                steps: StepClock) -> SpawnRecord:
        if decision.warned or decision.audited:
            spawner.log.warning("jovial_guard: %s admitted in %s mode: %s", spawner._log_name, decision.mode,
                                "; ".join(f"[{r.rule}] {r.message}" for _, r in decision.violations()))
        with steps.step("userns"):
            await self.seccomp_files().await_agent()
            userns = await self._user_block(str(spawner.user.name))
        with steps.step("render"):
            plan = self.render(spawner, decision, image=image, userns=userns)
        spawner.guard_plan = plan
        try:
            with steps.step("apply"):
                return await apply_plan(
                    plan, spawner,
                    networks=self.networks() if self.egress else None,
                    storage=self._storage(spawner) if self.storage_enabled else None,
                    steps=steps,
                )
        except ApplyFailed as exc:
            what = ("its network could not be set up" if exc.step == "network"
                    else "your storage could not be attached")
            raise SpawnRefused(
                f"Your server was not started: {what} ({exc.cause}). "
                "Try again; if it persists, tell the platform admins.",
                rule=f"jovial-guard/{'egress' if exc.step == 'network' else 'storage'}-unavailable",
                status_code=503,
            ) from exc

    async def _decide(self, spawner: Any) -> tuple[Decision, str, asyncio.Future[None]]:
        """The policy's decision on what this spawn will really run, that image, and the
        decision listeners being told (the decision log and the audit record are written
        while the spawn goes on; the hook waits for them before it returns or refuses)."""
        try:
            image = await final_image(spawner)
            workload = self.workload_for(spawner, image=image)
        except JovialGuardError as exc:
            raise SpawnRefused(f"[malformed-input] {exc}", rule="malformed-input", status_code=400) from exc
        except web.HTTPError as exc:  # DockerSpawner: the chosen image is not allowed
            raise SpawnRefused(f"Your server was not started: {exc.log_message or exc}",
                               rule="jovial-guard/image-not-allowed", status_code=400) from exc
        started = time.perf_counter()
        decision = await (await self.engine()).decide(workload)
        told = asyncio.ensure_future(tell_decision_listeners(
            self.decision_listener_callables(), workload, decision, time.perf_counter() - started))
        if not decision.allowed or decision.spec is None:
            await told
            raise decision_refusal(decision, spawner)
        return decision, image, told

    def render(self, spawner: Any, decision: Decision, *, image: str,
               userns: IdMap | None = None) -> SpawnPlan:
        """Everything the allowed ``decision`` implies for this spawn (no side effects)."""
        if decision.spec is None:
            raise SpawnRefused("Your server was not started: the decision has no spec",
                               rule="jovial-guard/unrenderable")
        seccomp_path = self.seccomp_files().file_for(decision.spec.seccomp)
        username = str(spawner.user.name)
        try:
            network = self.networks().plan(username, decision.spec.egress) if self.egress else None
            storage = (self._storage(spawner).plan_for_spawn(user=username, spec=decision.spec,
                                                              id_map=userns)
                       if self.storage_enabled else None)
            plan = render_spawn(
                decision,
                image=image,
                seccomp_path=seccomp_path,
                apparmor_supported=self.apparmor_supported,
                network=network,
                storage=storage,
                home_volume=self.home_volume_template.format(username=spawner.escaped_name),
                tmpfs_size=self.tmpfs_size,
                userns=userns,
            )
        except JovialGuardError as exc:
            raise SpawnRefused(
                f"Your server was not started: {exc}", rule="jovial-guard/unrenderable"
            ) from exc
        chosen = {"name": decision.spec.seccomp.localhost_profile or decision.spec.seccomp.type,
                  "audited": self.seccomp_files().audited}
        hardening = {**plan.record.hardening,
                     "seccomp": {**plan.record.hardening["seccomp"], **chosen}}
        return replace(plan, record=replace(plan.record, hardening=hardening))

    def seccomp_files(self) -> SeccompFiles:
        """The profile files for this hub's spawns (made on first use, from the settings)."""
        if self._seccomp_files is None:
            self._seccomp_files = SeccompFiles(
                profile_dir=self.seccomp_profile_dir, agent_socket=self.seccomp_agent_socket,
                audited_dir=self.seccomp_audited_dir, agent_wait=self.seccomp_agent_wait)
        return self._seccomp_files

    def _storage(self, spawner: Any) -> StorageCredentials:
        from ..credentials.hub import StorageCredentials

        return StorageCredentials.instance(config=spawner.config, log=spawner.log)

    async def post_stop(self, spawner: Any) -> None:
        spawner.guard_hardened = False
        self.release_slot(spawner)
        if self.storage_enabled:
            await self._storage(spawner).detach_for_spawn(spawner)
        if self.egress:
            await in_network_thread(self.networks().destroy, str(spawner.user.name))


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
    "pre_spawn_hook",
    "post_stop_hook",
]

