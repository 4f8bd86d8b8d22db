"""Cut a user's container off the network: replace the nftables ruleset *inside the
container's network namespace* with one that drops everything.

The namespace is found from the spawn registry: a named namespace the spawn hook registered
(``netns``, e.g. the per-user egress namespace ``jg-u-alice``), else the container's own
namespace through its pid (``nsenter -t PID -n``). Fail closed on the host's side: the
command is refused if the target namespace is the host's own network namespace, so the
host ruleset is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from ..errors import Unavailable
from .registry import Owner, SpawnRegistry
from .responses import ActionSkipped

DROP_ALL = """flush ruleset
table inet jovial_guard_cut {
  chain input { type filter hook input priority -300; policy drop; }
  chain forward { type filter hook forward priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
"""


class NetworkCutFailed(Unavailable):
    """nft did not accept the drop-all ruleset, or the namespace could not be entered."""


def _is_users_namespace(name: str, user: str) -> bool:
    """Whether ``name`` is ``user``'s per-user namespace (``PREFIX-u-KEY``, KEY from the one
    naming function the spawn uses). Only those may be cut: never the router or a service
    namespace, whose flushed ruleset would open egress for everyone, nor another user's."""
    from ..spawn.network import namespace_key

    prefix, separator, key = name.rpartition("-u-")
    return bool(separator) and bool(prefix) and key == namespace_key(user)


def _host_netns() -> int:
    """The network namespace this service runs in (the host's): never the target."""
    return os.stat("/proc/self/ns/net").st_ino


class NftNetworkCutter:
    def __init__(self, registry: SpawnRegistry, *, docker_client: Any = None,
                 run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> None:
        self.registry = registry
        self.docker = docker_client
        self._run = run

    async def cut(self, *, user: str, server: str | None) -> str:
        owners = self.registry.containers_of(user, server)
        if not owners:
            raise ActionSkipped(f"no running container registered for {user}")
        done = []
        for owner in owners:
            done.append(await asyncio.to_thread(self._cut_one, owner))
        return "; ".join(done)

    def argv_for(self, owner: Owner) -> list[str]:
        nft = shutil.which("nft") or "nft"
        if owner.netns:
            name = os.path.basename(owner.netns)
            if not _is_users_namespace(name, owner.user):
                raise NetworkCutFailed(
                    f"registered netns {owner.netns!r} is not {owner.user}'s per-user namespace; refusing")
            try:
                inode = os.stat(f"/run/netns/{name}").st_ino
            except OSError as exc:
                raise NetworkCutFailed(f"network namespace {name} does not exist") from exc
            if inode == _host_netns():
                raise NetworkCutFailed(f"netns {name} is the host namespace; refusing")
            return ["ip", "netns", "exec", name, nft, "-f", "-"]
        if self.docker is None or not owner.container_id:
            raise ActionSkipped("no network namespace or container id registered")
        pid = int(self.docker.api.inspect_container(owner.container_id)["State"]["Pid"] or 0)
        if pid <= 0:
            raise ActionSkipped(f"container {owner.container_id[:12]} is not running")
        if os.stat(f"/proc/{pid}/ns/net").st_ino == _host_netns():
            raise NetworkCutFailed(f"container {owner.container_id[:12]} shares the host network; refusing")
        return ["nsenter", "-t", str(pid), "-n", nft, "-f", "-"]

    def _cut_one(self, owner: Owner) -> str:
        argv = self.argv_for(owner)
        proc = self._run(argv, input=DROP_ALL, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise NetworkCutFailed(f"{' '.join(argv[:4])}: {proc.stderr.strip()[:300]}")
        target = owner.netns or f"container {owner.container_id[:12] if owner.container_id else '?'}"
        return f"dropped all traffic in {target}"
