"""The JupyterHub side: pre-spawn hook, guarded spawner, profile picker, ``jovial-guard up``.

Importing this package imports JupyterHub and DockerSpawner; the CLI imports it lazily.
"""

from .guard import JovialGuard, SpawnRefused, StartupRefused, post_stop_hook, pre_spawn_hook
from .spawner import GuardedDockerSpawner

__all__ = [
    "GuardedDockerSpawner",
    "JovialGuard",
    "SpawnRefused",
    "StartupRefused",
    "post_stop_hook",
    "pre_spawn_hook",
]
