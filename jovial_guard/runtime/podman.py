"""A project-owned ``podman system service``: the Docker API DockerSpawner and tests talk to.

Why our own service instead of the host's podman: the notebook cloud must not share storage,
locks, networks or configuration with whatever else runs podman on the machine. So the
service gets its own ``--root``/``--runroot``/``--tmpdir``, file locks, a containers.conf
written here (the project's runc build, :mod:`.runc`; cgroupfs; a file event log other
components can follow; explicit ulimits because this host's hard limits make podman's
defaults fail), a storage.conf naming the account whose subordinate ids user namespaces
come from (:mod:`jovial_guard.hardening.subids`), and no usable CNI
network: a container that does not name a network gets none, and podman's bridge, which
would edit the host firewall, cannot be set up at all (its plugin directory is empty).

The socket path identifies a service. A pid file beside the socket lets a new start clean
up what a crashed run left behind (a dead socket file, or a leftover service we started);
anything else answering on the socket is refused rather than killed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import docker

from ..constants import DOCKER_API_VERSION
from ..errors import Unavailable
from ..hardening.subids import ACCOUNT
from ..paths import engine_root

API_VERSION = DOCKER_API_VERSION
DEFAULT_SOCKET = Path("/run/jovial-guard/podman.sock")
RUN_DIR = Path("/run/jovial-guard")
ULIMITS = ("nofile=20000:20000", "nproc=4096:4096")


class EngineUnavailable(Unavailable):
    """The container engine cannot be started or does not answer on its socket."""


def default_root() -> Path:
    """The engine's storage: images and users' home volumes, so it is state, not cache.

    ``engine_root()/root``: the service keeps its containers.conf, network directory and
    log beside it, all inside ``engine_root()``.
    """
    return engine_root() / "root"


def default_runroot(root: Path) -> Path:
    """Run-time state (tmpfs) of one storage root; two roots never share one."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return RUN_DIR / f"engine-{tag}"


def find_podman() -> str:
    found = shutil.which("podman")
    if not found:
        raise EngineUnavailable(
            "podman is not installed: run scripts/install-system.sh (Debian's podman + runc)"
        )
    return found


def render_containers_conf(*, tmpdir: Path, events_path: Path, network_dir: Path,
                           cni_plugin_dir: Path, runc: Path) -> str:
    """The project's containers.conf (pure; see the module docstring for why each line).

    ``runc``: the project's build (:mod:`.runc`), the only binary the name ``runc`` means.
    """
    ulimits = ", ".join(f'"{u}"' for u in ULIMITS)
    return (
        "# Written by jovial_guard.runtime.podman; regenerated on every start.\n"
        "[containers]\n"
        f"default_ulimits = [{ulimits}]\n"
        'netns = "none"\n'
        'cgroupns = "private"\n'
        'ipcns = "private"\n'
        "# /etc/hosts from the image only: no host entries, no host.containers.internal.\n"
        'base_hosts_file = "image"\n'
        'host_containers_internal_ip = "none"\n'
        "\n[network]\n"
        'network_backend = "cni"\n'
        f'network_config_dir = "{network_dir}"\n'
        f'cni_plugin_dirs = ["{cni_plugin_dir}"]\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{events_path}"\n'
        'lock_type = "file"\n'
        f'tmp_dir = "{tmpdir}"\n'
        "service_timeout = 0\n"
        "\n[engine.runtimes]\n"
        f'runc = ["{runc}"]\n'
    )


def render_storage_conf(*, root: Path, runroot: Path, userns_account: str = ACCOUNT) -> str:
    """The project's storage.conf (pure): our storage, and the account whose subordinate ids
    user namespaces are checked against (never the host's generic ``containers`` entry)."""
    return (
        "# Written by jovial_guard.runtime.podman; regenerated on every start.\n"
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{root}"\n'
        f'runroot = "{runroot}"\n'
        "\n[storage.options]\n"
        f'root-auto-userns-user = "{userns_account}"\n'
    )


class PodmanService:
    """Start, wait for and stop one podman Docker-API service with project storage.

    Use as a context manager, or ``start()``/``stop()``. ``base_url`` is what docker-py and
    DockerSpawner take (``unix:///...``); ``podman_args()`` is the CLI with the same storage
    and configuration (for ``podman import``, ``image exists`` and friends).
    """

    def __init__(
        self,
        socket_path: str | Path | None = None,
        root: str | Path | None = None,
        runroot: str | Path | None = None,
        *,
        ready_timeout: float = 30.0,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else DEFAULT_SOCKET
        self.root = Path(root) if root else default_root()
        self.runroot = Path(runroot) if runroot else default_runroot(self.root)
        self.ready_timeout = ready_timeout
        self.conf_path = self.root.parent / "containers.conf"
        self.storage_conf_path = self.root.parent / "storage.conf"
        #: Which block of host ids each user's containers map to (beside the storage whose
        #: home volumes are owned by them; :mod:`jovial_guard.hardening.userns`).
        self.userns_state_path = self.root.parent / "userns.json"
        self.events_path = self.runroot / "events" / "events.log"
        self.tmpdir = self.runroot / "tmp"
        self.network_dir = self.root.parent / "networks"
        self.cni_plugin_dir = self.root.parent / "no-cni-plugins"
        self.pid_path = self.socket_path.with_name(self.socket_path.name + ".pid")
        self.log_path = self.root.parent / f"service-{self.socket_path.stem}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- addresses and argv -------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def podman_args(self) -> list[str]:
        """Base argv for the podman CLI on this storage, configuration included.

        Starts with ``env CONTAINERS_CONF=... CONTAINERS_STORAGE_CONF=...`` because lock type,
        ulimits and the user-namespace account exist only in those files: a CLI without them
        would use different locks on the same storage.
        """
        return [
            "env",
            f"CONTAINERS_CONF={self.conf_path}",
            f"CONTAINERS_STORAGE_CONF={self.storage_conf_path}",
            find_podman(),
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--storage-driver", "overlay",
            "--tmpdir", str(self.tmpdir),
            "--runtime", "runc",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--network-config-dir", str(self.network_dir),
        ]

    def docker_client(self, *, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.base_url, version=API_VERSION, timeout=timeout)

    def write_config(self) -> None:
        """Create the directories and (re)write containers.conf (RuntimeMissing when the
        project's runc is not built)."""
        from .runc import runc_path  # not at import: `python -m jovial_guard.runtime.runc`
        for directory in (self.root, self.runroot, self.tmpdir, self.events_path.parent,
                          self.network_dir, self.cni_plugin_dir, self.socket_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_containers_conf(
            tmpdir=self.tmpdir, events_path=self.events_path,
            network_dir=self.network_dir, cni_plugin_dir=self.cni_plugin_dir,
            runc=runc_path(),
        ))
        self.storage_conf_path.write_text(render_storage_conf(root=self.root, runroot=self.runroot))

    # -- lifecycle ------------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the socket answers the Docker API's ``/_ping``."""
        if not self.socket_path.exists():
            return False
        try:
            client = docker.DockerClient(base_url=self.base_url, version=API_VERSION, timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False

    def start(self) -> PodmanService:
        if self._proc is not None:
            return self
        podman = find_podman()
        self.write_config()
        self._clear_leftovers()
        self._log = open(self.log_path, "ab")
        argv = self.podman_args()[3:] + ["system", "service", "--time=0", self.base_url]
        argv[0] = podman
        env = dict(os.environ, CONTAINERS_CONF=str(self.conf_path),
                   CONTAINERS_STORAGE_CONF=str(self.storage_conf_path))
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        self.pid_path.write_text(f"{self._proc.pid} {os.getpid()}\n")
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                tail = self._log_tail()
                self.stop()
                raise EngineUnavailable(
                    f"podman system service exited with status {rc}; log {self.log_path}:\n{tail}"
                )
            if self.ping():
                return self
            time.sleep(0.1)
        tail = self._log_tail()
        self.stop()
        raise EngineUnavailable(
            f"podman system service did not answer on {self.socket_path} within "
            f"{self.ready_timeout:.0f}s; log {self.log_path}:\n{tail}"
        )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        """Start again on the same socket and storage; running containers are untouched
        (conmon keeps them), and the next API call finds them."""
        self.stop()
        self.start()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc.pid, proc)
        self._cleanup_files()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PodmanService:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------
    def _clear_leftovers(self) -> None:
        """Remove what a crashed run left on our socket; never fight a live owner.

        The pid file names the service and the process that started it. A service whose
        starter is gone is a leftover and is stopped; one whose starter still runs belongs
        to a live hub (refused); anything else answering on the socket is foreign (refused).
        """
        service_pid, owner_pid = _read_pids(self.pid_path)
        if service_pid and _is_our_service(service_pid, self.socket_path):
            if owner_pid and _alive(owner_pid):
                raise EngineUnavailable(
                    f"{self.socket_path} is in use by a podman service that jovial_guard "
                    f"process {owner_pid} started and still runs: stop that first or choose "
                    "another socket_path"
                )
            _terminate(service_pid, None)
        if self.ping():
            raise EngineUnavailable(
                f"another service already answers on {self.socket_path} and was not started "
                "by jovial_guard: stop it or choose another socket_path"
            )
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        for path in (self.socket_path, self.pid_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def _read_pids(path: Path) -> tuple[int | None, int | None]:
    """``SERVICE_PID OWNER_PID`` from the pid file (either may be missing)."""
    try:
        fields = [int(f) for f in path.read_text().split()[:2]]
    except (OSError, ValueError):
        return None, None
    return (fields[0] if fields else None), (fields[1] if len(fields) > 1 else None)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _is_our_service(pid: int, socket_path: Path) -> bool:
    """Is ``pid`` a live ``podman system service`` on exactly this socket?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return (
        bool(args)
        and os.path.basename(args[0]) == "podman"
        and "service" in args
        and f"unix://{socket_path}" in args
    )


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the service's own process group included."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
