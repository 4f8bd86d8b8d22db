"""The embedded stack as one object: managed OPA, podman service, notebook image, JupyterHub.

Shared by ``jovial-guard up``, the integration tests' ``embedded_hub`` fixture and
``bench/spawn.py`` so all three run exactly the same thing. Start order is what the hub
needs (policy engine, container engine, image, then the hub, which starts its proxy);
stop order is the reverse. Any piece failing to start stops what was started and raises
:class:`StackStartFailed` with the reason (the hub's own refusal included). Once started,
a :class:`~jovial_guard.supervise.Supervisor` restarts OPA and the engine service if they
exit (same port and socket, so the hub never needs to know).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..errors import JovialGuardError
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces
from ..paths import HUB_STATE_ENV
from ..policy.bundle_server import BundleServer
from ..policy.bundles import BUNDLE_NAME, opa_bundle_config
from ..policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa, free_loopback_port
from ..policy.store import PolicyStore
from ..runtime.image import NOTEBOOK_IMAGE, ensure_notebook_image
from ..runtime.podman import PodmanService, default_root
from ..supervise import Supervisor

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "jupyterhub_config.py"
Progress = Callable[[str], None]


class StackStartFailed(JovialGuardError):
    """A piece of the embedded stack did not come up; the message says which and why."""


@dataclass
class StackSettings:
    """Everything that differs between ``up``, a test run and a benchmark run."""

    state_dir: Path
    bind_host: str = "127.0.0.1"
    bind_port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001
    netns_prefix: str = "jg"
    egress_pool: str = DEFAULT_POOL
    config_file: Path = DEFAULT_CONFIG
    engine_socket: Path | None = None
    api_token: str | None = None
    password: str | None = None
    admin_password: str | None = None
    policy_dir: Path = DEFAULT_POLICY_DIR
    engine_root: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    hub_ready_timeout: float = 90.0
    supervise: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self.bind_port}"

    @classmethod
    def ephemeral(cls, state_dir: Path, **kwargs: object) -> StackSettings:
        """Free loopback ports, a fresh API token: for tests and benchmarks."""
        settings = cls(
            state_dir=state_dir,
            bind_port=free_loopback_port(),
            hub_port=free_loopback_port(),
            proxy_api_port=free_loopback_port(),
            api_token=secrets.token_hex(24),
            password=secrets.token_urlsafe(12),
            admin_password=secrets.token_urlsafe(32),
        )
        for key, value in kwargs.items():
            setattr(settings, key, value)
        return settings


class HubProcess:
    """``jupyterhub -f CONFIG`` as a child process, ready when its API answers."""

    def __init__(self, settings: StackSettings, *, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.log_path = settings.state_dir / "jupyterhub.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> HubProcess:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.settings.config_file)],
                cwd=self.settings.state_dir, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + self.settings.hub_ready_timeout
        url = self.settings.url + "/hub/api/"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self._proc = None
                raise StackStartFailed(f"JupyterHub exited while starting:\n{tail}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise StackStartFailed(
            f"JupyterHub did not answer at {url} within {self.settings.hub_ready_timeout:.0f}s:\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the hub stops user servers and its proxy), then SIGKILL the group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the proxy, if the hub left it behind
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class EmbeddedStack:
    """OPA + podman + image + JupyterHub, started and stopped together."""

    def __init__(self, settings: StackSettings, *, progress: Progress = print) -> None:
        self.settings = settings
        self.progress = progress
        self.opa: ManagedOpa | None = None
        self.podman: PodmanService | None = None
        self.hub: HubProcess | None = None
        self.store: PolicyStore | None = None
        self.bundle_server: BundleServer | None = None
        self.egress = EgressNamespaces(settings.netns_prefix, pool=settings.egress_pool)
        self.supervisor: Supervisor | None = None

    def hub_env(self) -> dict[str, str]:
        s = self.settings
        assert_started = self.opa is not None and self.podman is not None
        if not assert_started:
            raise StackStartFailed("hub_env() before OPA and podman were started")
        env = dict(os.environ)
        env.update({
            "JOVIAL_GUARD_OPA_URL": self.opa.url,  # type: ignore[union-attr]
            **self._bundle_env(),
            "JOVIAL_GUARD_ENGINE_SOCKET": str(self.podman.socket_path),  # type: ignore[union-attr]
            "JOVIAL_GUARD_USERNS_STATE": str(self.podman.userns_state_path),  # type: ignore[union-attr]
            HUB_STATE_ENV: str(s.state_dir),
            "JOVIAL_GUARD_BIND_URL": s.url,
            "JOVIAL_GUARD_HUB_PORT": str(s.hub_port),
            "JOVIAL_GUARD_PROXY_API_PORT": str(s.proxy_api_port),
            "JOVIAL_GUARD_NETNS_PREFIX": s.netns_prefix,
            "JOVIAL_GUARD_EGRESS_POOL": s.egress_pool,
        })
        # A token from outside (CHP's auth) must not leak in; the hub makes its own.
        env.pop("CONFIGPROXY_AUTH_TOKEN", None)
        for key, value in (("JOVIAL_GUARD_API_TOKEN", s.api_token),
                           ("JOVIAL_GUARD_PASSWORD", s.password),
                           ("JOVIAL_GUARD_ADMIN_PASSWORD", s.admin_password)):
            if value:
                env[key] = value
        env.update(s.extra_env)
        return env

    def hub_policy(self) -> dict[str, str]:
        """The hub's ``c.JovialGuard`` policy settings: the compiled policy of the signed
        bundle OPA follows (OPA's address too, for ``JOVIAL_GUARD_POLICY_ENGINE=opa``)."""
        if self.bundle_server is None or self.store is None or self.opa is None:
            raise StackStartFailed("hub_policy() before the policy engine was started")
        return {
            "policy_engine": "wasm",
            "policy_bundle_url": f"{self.bundle_server.url}/bundles/{BUNDLE_NAME}.tar.gz",
            "policy_bundle_public_key": str(self.store.key.public_path),
            "policy_bundle_key_id": self.store.key.key_id,
            "opa_url": self.opa.url,
        }

    def _bundle_env(self) -> dict[str, str]:
        """:meth:`hub_policy`'s bundle, as the environment ``jupyterhub_config.py`` reads."""
        policy = self.hub_policy()
        return {
            "JOVIAL_GUARD_POLICY_BUNDLE_URL": policy["policy_bundle_url"],
            "JOVIAL_GUARD_POLICY_BUNDLE_KEY": policy["policy_bundle_public_key"],
            "JOVIAL_GUARD_POLICY_BUNDLE_KEY_ID": policy["policy_bundle_key_id"],
        }

    def start(self) -> EmbeddedStack:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.progress("policy engine: starting OPA on signed bundles from the policy store")
            self.opa = self._start_policy_engine()
            self.progress(f"policy engine: OPA at {self.opa.url} (revision {self.store.current() if self.store else '?'})")
            self.progress("container engine: starting podman's Docker API service")
            self.podman = PodmanService(s.engine_socket, root=s.engine_root or default_root()).start()
            self.progress(f"container engine: {self.podman.base_url}")
            ensure_notebook_image(self.podman, progress=self.progress, image=NOTEBOOK_IMAGE)
            self.progress(f"hub: starting JupyterHub with {s.config_file.name}")
            self.hub = HubProcess(s, env=self.hub_env()).start()
            if s.supervise:
                self.supervisor = Supervisor(
                    [("opa", self.opa), ("container engine", self.podman)],
                    log=lambda message: self.progress(f"supervisor: {message}"),
                ).start()
        except JovialGuardError as exc:
            self.stop()
            if isinstance(exc, StackStartFailed):
                raise
            raise StackStartFailed(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _start_policy_engine(self) -> ManagedOpa:
        """OPA fed by the policy store's bundle server, so `jovial-guard policy deploy`
        can switch a running hub's policy atomically (and roll it back).

        The first start seeds the store with ``settings.policy_dir``; later starts keep
        whatever revision an admin deployed. ``runtime.json`` tells the policy CLI where
        this OPA is.
        """
        s = self.settings
        self.store = PolicyStore(s.state_dir / "policy-store")
        if self.store.current() is None:
            revision = self.store.add(s.policy_dir)
            self.store.activate(revision)
            self.store.record("deploy", revision, previous=None, actor="jovial-guard up",
                              details={"source": str(s.policy_dir), "seeded": True})
        self.bundle_server = BundleServer(self.store).start()
        opa = ManagedOpa(None, config=opa_bundle_config(service_url=self.bundle_server.url, key=self.store.key),
                         revision=self.store.current(), log_path=s.state_dir / "opa.log").start()
        runtime = {"opa_url": opa.url, "bundle_url": self.bundle_server.url, "hub_url": s.url,
                   "policy_store": str(self.store.root), "decision_log": str(s.state_dir / "decisions.jsonl")}
        (s.state_dir / "runtime.json").write_text(json.dumps(runtime, indent=2) + "\n")
        return opa

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        try:
            self.egress.teardown()
        except JovialGuardError:
            pass
        if self.podman is not None:
            self.podman.stop()
            self.podman = None
        if self.opa is not None:
            self.opa.stop()
            self.opa = None
        if self.bundle_server is not None:
            self.bundle_server.stop()
            self.bundle_server = None
        (self.settings.state_dir / "runtime.json").unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def temp_state_dir(prefix: str = "jovial-guard-hub-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
