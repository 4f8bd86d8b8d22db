"""`GuardedDockerSpawner`: DockerSpawner that only starts what the guard hardened.

Two changes to DockerSpawner, both about failing closed and about the network:

* ``start()`` refuses unless the pre-spawn hook rendered a decision onto this spawner in
  this spawn (``guard_hardened``): a missing or mis-wired hook cannot lead to an
  unhardened container.
* ``get_ip_and_port()`` returns the container's address inside its egress namespace; the
  container publishes no host port (``network_mode=ns:/run/netns/NAME``).
"""

from __future__ import annotations

from typing import Any

from dockerspawner import DockerSpawner
from traitlets import Bool, Dict, Unicode, default

from ..runtime.image import NOTEBOOK_IMAGE


class GuardedDockerSpawner(DockerSpawner):  # type: ignore[misc]
    """DockerSpawner for the hardened embedded cloud (see the module docstring)."""

    guard_hardened = Bool(False, help="Set by the pre-spawn hook once this spawn is hardened.")
    guard_address = Unicode("", help="The container's address in its egress namespace.")
    guard_record = Dict(help="What the hook decided and applied, for audit and tests.")

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
        try:
            return await super().start()
        finally:
            # The next start must be decided again.
            self.guard_hardened = False

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.guard_address:
            return self.guard_address, self.port
        return await super().get_ip_and_port()  # type: ignore[no-any-return]
