"""Render a :class:`~jovial_guard.decision.SecuritySpec` into DockerSpawner settings.

Pure and deterministic: the same spec and arguments always give the same dict, with no I/O,
so the rendering is pinned by golden tests (``tests/vectors/render_docker/``). The pre-spawn
hook applies the result to a DockerSpawner; podman's Docker API (4.3) enforces it.

Why each piece is shaped the way it is (see PLATFORM-NOTES):

* ``read_only`` root plus tmpfs for every writable path except the home directory, which is
  a per-user named volume. The volume bind carries podman's ``U`` option so its contents are
  owned by the container user's uid:gid (podman 4.3 rejects ``uid=`` on tmpfs, and a named
  volume has no uid option).
* ``seccomp=<file>``: podman takes a profile *file* path, never inline JSON.
* AppArmor is applied only when the host kernel has the LSM. Otherwise the result says so in
  ``hardening["apparmor"]["status"] == "unsupported"``: never silently faked.
* Explicit ulimits, because this host's hard ``nofile`` limit makes the engine's default
  ulimits fail every container.
* ``network_mode`` is ``ns:/run/netns/NAME``: a namespace the egress module made, with
  nftables rules from the decision; never podman's CNI bridge (it edits the host firewall).
* ``userns``: the user's own block of host ids (:mod:`jovial_guard.hardening.userns`), rendered
  as ``userns_mode`` beside ``host_config``, not in it: docker-py's ``create_host_config``
  accepts only ``host`` there, so the spawner passes it as the raw ``HostConfig.UsernsMode``.
  Home (``U``) and the tmpfs (``U``, ``mode``) are owned through the mapping by the engine.
  ``/sys`` becomes an empty read-only tmpfs (the engine binds the container's own cgroups
  below it): podman 4.3 would mount a new sysfs, which a user namespace may not do inside a
  network namespace it does not own (the egress namespace), and the host's sysfs is nothing
  a notebook needs to read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..decision import SecuritySpec
from ..errors import Misconfigured
from .quantity import Quantity, parse
from .userns import IdMap

#: ulimits every container gets (``nofile`` must not exceed the host hard limit of 20000).
ULIMITS: tuple[tuple[str, int, int], ...] = (("nofile", 20000, 20000), ("nproc", 4096, 4096))
DEFAULT_HOME = "/home/jovyan"
DEFAULT_TMPFS_SIZE = "512m"

_CAPABILITY = re.compile(r"^(CAP_)?[A-Z_]{2,32}$")
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_NETNS_MODE = re.compile(r"^(ns:/run/netns/[A-Za-z0-9_.-]{1,64}|none)$")
_TMPFS_SIZE = re.compile(r"^[0-9]+[kmg]?$")
#: ``/sys`` in a user-namespaced container: empty and read-only (see the module docstring).
EMPTY_SYS = "ro,nosuid,nodev,noexec,size=4k,mode=0555"


class UnrenderableSpec(Misconfigured):
    """The spec (or a render argument) cannot be turned into an engine configuration.

    Raised instead of rendering something weaker: the hook refuses the spawn.
    """


def parse_memory(quantity: str) -> int:
    """Kubernetes memory quantity (``"2Gi"``, ``"512M"``, ``"1073741824"``) to bytes."""
    parsed = _parse(quantity, what="memory")
    if parsed.suffix in ("m", "u", "n"):
        raise UnrenderableSpec(f"memory quantity {quantity!r} uses milli-units (or smaller); use Mi or Gi")
    value = int(parsed.value)
    if value < 6 * 2**20:
        raise UnrenderableSpec(f"memory limit {quantity!r} is below the engine minimum of 6Mi")
    return value


def parse_cpu(quantity: str) -> int:
    """Kubernetes CPU quantity (``"2"``, ``"500m"``, ``"1.5"``) to Docker ``nano_cpus``."""
    parsed = _parse(quantity, what="cpu")
    if parsed.suffix not in ("", "m"):
        raise UnrenderableSpec(f"cpu quantity {quantity!r}: expected cores ('2') or millicores ('500m')")
    nano = int(parsed.value * 10**9)
    if nano < 10**7:
        raise UnrenderableSpec(f"cpu limit {quantity!r} is below 10m")
    return nano


def _parse(quantity: str, *, what: str) -> Quantity:
    try:
        return parse(quantity)
    except ValueError as exc:
        raise UnrenderableSpec(f"{what} quantity {quantity!r} is not a Kubernetes quantity like '2Gi' ({exc})") from None


def _capabilities(names: tuple[str, ...], *, which: str) -> list[str]:
    out: set[str] = set()
    for name in names:
        upper = name.strip().upper()
        if not _CAPABILITY.match(upper):
            raise UnrenderableSpec(f"capability {name!r} in {which} is not a capability name")
        out.add(upper.removeprefix("CAP_"))
    return sorted(out)


def _storage_bind(source: str, bind: Mapping[str, str], *, taken: set[str]) -> dict[str, str]:
    """A storage staging bind: an absolute host directory, read-only, ``rslave`` so the
    agent's later mounts reach the container; it may not shadow home or a tmpfs."""
    target = str(bind.get("bind", ""))
    if not source.startswith("/") or ".." in source.split("/"):
        raise UnrenderableSpec(f"storage volume source {source!r} must be an absolute directory")
    if not target.startswith("/") or target == "/" or ".." in target.split("/") or target in taken:
        raise UnrenderableSpec(f"storage mount point {target!r} must be a free absolute directory")
    if bind.get("mode") != "ro" or bind.get("propagation") != "rslave":
        raise UnrenderableSpec(f"storage volume {source!r} must be read-only with rslave propagation")
    return {"bind": target, "mode": "ro", "propagation": "rslave"}


def render_docker(
    spec: SecuritySpec,
    *,
    seccomp_path: str,
    apparmor_supported: bool,
    network_mode: str,
    home_volume: str,
    home_path: str = DEFAULT_HOME,
    tmpfs_size: str = DEFAULT_TMPFS_SIZE,
    storage_volume: Mapping[str, Mapping[str, str]] | None = None,
    userns: IdMap | None = None,
) -> dict[str, Any]:
    """The DockerSpawner settings that make a container look like ``spec``.

    Returns ``{"user", "host_config", "volumes", "mem_limit", "hardening"}``:

    * ``host_config``: keyword arguments for docker-py's ``create_host_config``
      (DockerSpawner's ``extra_host_config``);
    * ``volumes``: DockerSpawner's ``volumes``: the home volume (if home is writable) and
      ``storage_volume``, the user's read-only storage staging directory (if any);
    * ``user``: ``"uid:gid"`` for ``create_container`` (``extra_create_kwargs``);
    * ``mem_limit``: bytes, for DockerSpawner's ``mem_limit`` (it also tells the server);
    * ``userns_mode``: the engine's ``UsernsMode`` for ``userns`` (None: the host's ids);
    * ``hardening``: what was applied and what the host cannot do (the audit record).

    Every argument is keyword-only so call sites read like configuration.
    """
    if not seccomp_path.startswith("/"):
        raise UnrenderableSpec(f"seccomp_path {seccomp_path!r} must be an absolute file path")
    if not _NETNS_MODE.match(network_mode):
        raise UnrenderableSpec(
            f"network_mode {network_mode!r} must be 'ns:/run/netns/NAME' (a project namespace) or 'none'"
        )
    if not _VOLUME_NAME.match(home_volume):
        raise UnrenderableSpec(f"home_volume {home_volume!r} is not a valid volume name")
    if not home_path.startswith("/") or home_path == "/":
        raise UnrenderableSpec(f"home_path {home_path!r} must be an absolute directory")
    if not _TMPFS_SIZE.match(tmpfs_size):
        raise UnrenderableSpec(f"tmpfs_size {tmpfs_size!r} must look like '512m'")
    if spec.uid <= 0 or spec.gid < 0:
        raise UnrenderableSpec(f"uid {spec.uid} / gid {spec.gid}: notebooks never run as root")

    if userns is not None and not (spec.uid < userns.size and spec.gid < userns.size
                                   and spec.fs_group < userns.size):
        raise UnrenderableSpec(
            f"uid {spec.uid} / gid {spec.gid} / fsGroup {spec.fs_group} lie outside the user's "
            f"user-namespace mapping (container ids 0..{userns.size - 1})")
    cap_drop = _capabilities(spec.capabilities_drop, which="capabilities.drop")
    cap_add = _capabilities(spec.capabilities_add, which="capabilities.add")
    if "ALL" in cap_add:
        raise UnrenderableSpec("capabilities.add contains ALL")

    security_opt: list[str] = []
    if spec.no_new_privileges:
        security_opt.append("no-new-privileges")
    if spec.seccomp.type == "Localhost":
        security_opt.append(f"seccomp={seccomp_path}")
        seccomp_record = {"status": "applied", "profile": seccomp_path}
    else:
        # RuntimeDefault: the engine's own default filter (still filtering; never unconfined).
        seccomp_record = {"status": "applied", "profile": "runtime/default"}

    apparmor_name = spec.apparmor.localhost_profile if spec.apparmor.type == "Localhost" else None
    if apparmor_supported:
        if apparmor_name:
            security_opt.append(f"apparmor={apparmor_name}")
        apparmor_record = {"status": "applied", "profile": apparmor_name or "runtime/default"}
    else:
        apparmor_record = {
            "status": "unsupported",
            "profile": apparmor_name or "runtime/default",
            "reason": "the host kernel has no AppArmor LSM; the profile was not applied",
        }

    home_writable = False
    tmpfs: dict[str, str] = {}
    for path in sorted(set(spec.writable_paths)):
        if not path.startswith("/") or path == "/" or ".." in path.split("/"):
            raise UnrenderableSpec(f"writable path {path!r} must be an absolute directory below /")
        if path == home_path:
            home_writable = True
            continue
        mode = "1777" if path == "/tmp" else "0700"
        owner = "" if path == "/tmp" else ",U"
        tmpfs[path] = f"rw,nosuid,nodev,size={tmpfs_size},mode={mode}{owner}"

    if userns is not None:
        if "/sys" in tmpfs:
            raise UnrenderableSpec("writable path /sys cannot be granted")
        tmpfs["/sys"] = EMPTY_SYS

    if spec.resources.gpu:
        raise UnrenderableSpec(
            f"the spec asks for {spec.resources.gpu} GPU(s); the embedded engine has no GPU "
            "support, so this profile cannot run here"
        )
    memory = parse_memory(spec.resources.memory_limit)
    pids = spec.resources.pids_limit
    if pids <= 0:
        raise UnrenderableSpec(f"pids_limit {pids} must be positive")

    host_config: dict[str, Any] = {
        "read_only": spec.read_only_root,
        "tmpfs": tmpfs,
        "cap_drop": cap_drop,
        "security_opt": security_opt,
        "pids_limit": pids,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": parse_cpu(spec.resources.cpu_limit),
        "ulimits": [{"Name": n, "Soft": s, "Hard": h} for n, s, h in ULIMITS],
        "network_mode": network_mode,
        "ipc_mode": "private",
    }
    if cap_add:
        host_config["cap_add"] = cap_add
    if spec.fs_group != spec.gid:
        host_config["group_add"] = [str(spec.fs_group)]
    volumes: dict[str, dict[str, str]] = (
        {home_volume: {"bind": home_path, "mode": "rw,U"}} if home_writable else {})
    for source, bind in sorted((storage_volume or {}).items()):
        volumes[source] = _storage_bind(source, bind, taken={home_path, *tmpfs})
    return {
        "user": f"{spec.uid}:{spec.gid}",
        "host_config": host_config,
        "volumes": volumes,
        "mem_limit": memory,
        "userns_mode": userns.userns_mode() if userns is not None else None,
        "hardening": {
            "profile": spec.profile,
            "read_only_root": spec.read_only_root,
            "seccomp": seccomp_record,
            "apparmor": apparmor_record,
            "capabilities": {"drop": cap_drop, "add": cap_add},
            "no_new_privileges": spec.no_new_privileges,
            "network_mode": network_mode,
            "home_volume": home_volume if home_writable else None,
            # What the container's cgroup must hold (attestation reads it back).
            "limits": {"memory_bytes": memory, "pids": pids, "nano_cpus": host_config["nano_cpus"]},
            "user_namespace": ({"status": "applied", **userns.to_json()} if userns is not None
                               else {"status": "host", "reason": "user namespaces are off"}),
        },
    }
