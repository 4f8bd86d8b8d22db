"""`GuardedDockerSpawner`: DockerSpawner that only starts what the guard hardened.

Two changes to DockerSpawner, both about failing closed and about the network:

* ``start()`` refuses unless the pre-spawn hook rendered a decision onto this spawner in
  this spawn (``guard_hardened``): a missing or mis-wired hook cannot lead to an
  unhardened container.
* ``check_allowed()`` (DockerSpawner's resolution of a user's image choice inside
  ``start()``) refuses any image but the one the hook decided on, and ``start()`` refuses
  when the configured image changed after the decision.
* ``get_ip_and_port()`` returns the container's address inside its egress namespace; the
  container publishes no host port (``network_mode=ns:/run/netns/NAME``).
* ``create_object()`` makes an existing home volume private (mode 0700) first: new homes take that
  mode from the image, homes made before it had 0755, so another user's escaped process
  holding a path into them could have read what a notebook wrote world-readable. It also
  drops the home's ownership walk (``U``) when the volume is settled
  (:mod:`jovial_guard.hardening.home_owner`); a start with the walk records it.
* ``start()`` returns once the server accepts connections on its port (polled every 50 ms
  within the hub's ``http_timeout``/``start_timeout``), so the hub's readiness check, which
  backs off exponentially (a poll can come seconds after the server is up), finds it ready
  at once; a container that stopped ends the wait.
* With a start queue (``c.JovialGuard.start_slots``), ``progress()`` tells a waiting user
  how many users are ahead ("waiting: 3 users ahead of you") on the spawn page, and the
  start slot is given back once the server answers on its port.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import NotFound
from dockerspawner import DockerSpawner
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Unicode, default

from .. import paths
from ..hardening.home_owner import Block, HomeOwners
from ..runtime.image import NOTEBOOK_HOME, NOTEBOOK_IMAGE

if TYPE_CHECKING:
    from .guard import JovialGuard


class GuardedDockerSpawner(DockerSpawner):  # type: ignore[misc]
    """DockerSpawner for the hardened embedded cloud (see the module docstring)."""

    guard_hardened = Bool(False, help="Set by the pre-spawn hook once this spawn is hardened.")
    guard_address = Unicode("", help="The container's address in its egress namespace.")
    guard_record = Dict(help="What the hook decided and applied, for audit and tests.")
    guard_plan = AnyTrait(None, allow_none=True,
                          help="The SpawnPlan the hook rendered and applied for this spawn.")
    guard_image = Unicode("", help="The image the policy decided on for this spawn.")
    guard_ticket = AnyTrait(None, allow_none=True,
                            help="This spawn's place in the start queue (None: no queue).")
    _home_walked: tuple[str, tuple[HomeOwners, Block]] | None = None

    @default("image")
    def _default_image(self) -> str:
        return NOTEBOOK_IMAGE

    @default("remove")
    def _default_remove(self) -> bool:
        # Containers are disposable; the home volume is what persists.
        return True

    @default("pull_policy")
    def _default_pull_policy(self) -> str:
        # No registry is reachable; the image is built locally.
        return "never"

    async def start(self) -> Any:
        if not self.guard_hardened:
            from .guard import SpawnRefused

            raise SpawnRefused(
                "Your server was not started: the security hook did not run for this spawn "
                "(c.Spawner.pre_spawn_hook must be jovial_guard.spawn.pre_spawn_hook). "
                "Tell the platform admins.",
                rule="jovial-guard/hook-missing", status_code=503,
            )
        began = time.monotonic()
        self._home_walked = None  # set again by create_object() for this start
        try:
            image_choice = (self.user_options or {}).get("image")
            if not image_choice and self.image != self.guard_image:
                self._refuse_image(self.image)
            ip_port = await super().start()
            await self._record_home_walk()
        except BaseException:
            _guard_of(self).release_slot(self)
            raise
        finally:
            # The next start must be decided again.
            self.guard_hardened = False
        ip, port = ip_port
        # Return once the server listens, within the hub's own start budget; the hub then
        # finds it ready at its first check instead of at its next back-off poll.
        budget = min(float(self.http_timeout), float(self.start_timeout) - (time.monotonic() - began) - 5)
        await self._wait_listening(ip, port, budget)
        if self.guard_ticket is not None:
            self._release_task = asyncio.ensure_future(self._release_when_listening(ip, port))
        return ip_port

    async def _wait_listening(self, ip: str, port: int, budget: float) -> bool:
        """Poll ``ip:port`` every 50 ms for up to ``budget`` seconds; False at once when the
        container stopped (the hub's own readiness check then reports the failure)."""
        deadline = time.monotonic() + budget
        next_poll = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if await _accepts(ip, port):
                return True
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 1.0
                if await self.poll() is not None:
                    return False
            await asyncio.sleep(0.05)
        return False

    async def _release_when_listening(self, ip: str, port: int) -> None:
        """Give the start slot back once the server accepts connections (its start-up work
        is done) or ``http_timeout`` passed."""
        deadline = time.monotonic() + float(self.http_timeout)
        try:
            while time.monotonic() < deadline and self.guard_ticket is not None \
                    and not self.guard_ticket.released:
                if await _accepts(ip, port):
                    return
                await asyncio.sleep(0.25)
        finally:
            _guard_of(self).release_slot(self)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Spawn-page events: the place in the start queue while waiting, then DockerSpawner's."""
        queue = _guard_of(self).queue()
        if queue is not None:
            ticket = self.guard_ticket
            # The page may ask before the hook queued this spawn: wait for its ticket.
            while (ticket is None or ticket.released) and self._spawn_pending:
                await asyncio.sleep(0.2)
                ticket = self.guard_ticket
            if ticket is not None and not ticket.released:
                async for ahead in queue.positions(ticket):
                    users = "user" if ahead == 1 else "users"
                    yield {"progress": 5, "message": f"waiting: {ahead} {users} ahead of you "
                           f"({queue.slots} servers start at a time)"}
                yield {"progress": 20, "message": "your turn: the security policy decides, "
                       "then your server starts"}
        async for event in super().progress():
            yield event

    async def create_object(self) -> Any:
        """DockerSpawner's container creation, once the image is settled: the home volume
        made private first, and its ownership walk (``U``) dropped when it is settled."""
        await self._prepare_home()
        return await super().create_object()

    def _home_volume(self) -> tuple[str, dict[str, Any]] | None:
        for name, bind in dict(self.volumes or {}).items():
            if isinstance(bind, dict) and bind.get("bind") == NOTEBOOK_HOME and not name.startswith("/"):
                return name, bind
        return None

    def _home_owners(self) -> tuple[HomeOwners, Block] | None:
        """The walk record and the ids this spawn's home may carry (None: no plan)."""
        plan = self.guard_plan
        if plan is None:
            return None
        userns = plan.record.hardening.get("user_namespace", {})
        block = (Block(int(userns["host_start"]), int(userns["size"]))
                 if userns.get("status") == "applied" else Block())
        return HomeOwners(paths.home_owners_state(Path(_guard_of(self).userns_state_path))), block

    async def _prepare_home(self) -> None:
        """chmod 0700 the existing home volume's directory (a no-op for a new one); start
        without ``U`` when :class:`~jovial_guard.hardening.home_owner.HomeOwners` says the
        volume is settled (the walk is then recorded after the start, see ``start``)."""
        self._home_walked = None
        home = self._home_volume()
        if home is None:
            return
        name, bind = home
        modes = str(bind.get("mode", "")).split(",")
        walk = self._home_owners() if "U" in modes else None
        if walk is not None:
            self._home_walked = (name, walk)
        try:
            info = await self.docker("inspect_volume", name)
        except NotFound:
            return
        path = str(info.get("Mountpoint") or "")
        if path and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            os.chmod(path, 0o700)
            self.log.info("jovial_guard: made %s's home %s private (0700)", self._log_name, name)
        if path and walk is not None:
            owners, block = walk
            created = str(info.get("CreatedAt") or "")
            if await asyncio.to_thread(owners.settled, volume=name, created=created,
                                       path=Path(path), block=block):
                spawner: Any = self  # DockerSpawner's traits are untyped
                spawner.volumes = {**dict(spawner.volumes or {}),
                                   name: {**bind, "mode": ",".join(m for m in modes if m != "U")}}
                self._home_walked = None
                self.log.info("jovial_guard: %s's home %s is owned through its id block already: "
                              "no ownership walk", self._log_name, name)

    async def _record_home_walk(self) -> None:
        """After a start with ``U``: the engine walked the home to its owner; record it."""
        walked, self._home_walked = self._home_walked, None
        if walked is None:
            return
        name, (owners, block) = walked
        try:
            info = await self.docker("inspect_volume", name)
            await asyncio.to_thread(owners.record, volume=name, created=str(info.get("CreatedAt") or ""),
                                    path=Path(str(info.get("Mountpoint") or "")), block=block)
        except Exception as exc:  # noqa: BLE001 - without a record the next start walks again
            self.log.warning("jovial_guard: could not record %s's home walk: %s", self._log_name, exc)

    async def check_allowed(self, image: str) -> str:
        resolved = str(await super().check_allowed(image))
        # The hook resolves the choice before deciding (not hardened yet); start() after it.
        if self.guard_hardened and resolved != self.guard_image:
            self._refuse_image(resolved)
        return resolved

    def _refuse_image(self, image: str) -> None:
        from .guard import SpawnRefused

        self.guard_hardened = False
        raise SpawnRefused(
            f"Your server was not started: it would run {image}, but the policy decided on "
            f"{self.guard_image or 'no image'}. Try again.",
            rule="jovial-guard/image-changed", status_code=409,
        )

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.guard_address:
            return self.guard_address, self.port
        return await super().get_ip_and_port()  # type: ignore[no-any-return]


async def _accepts(ip: str, port: int) -> bool:
    """Whether a TCP connection to ``ip:port`` is accepted (within 2 s)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 2)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


def _guard_of(spawner: Any) -> JovialGuard:
    from .guard import JovialGuard

    return JovialGuard.instance(config=spawner.config, log=spawner.log)
