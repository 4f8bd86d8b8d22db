"""Integration fixtures: the real embedded stack (OPA, podman, JupyterHub + CHP, the hook).

``embedded_hub`` (session scope) is shared by every integration test that needs a running
hub: the red-team tests, credentials and audit live tests. Its API is stable; see
:class:`EmbeddedHub`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest
import requests

from jovial_guard.hardening.egress import EgressNamespaces
from jovial_guard.policy.client import OpaEndpoint
from jovial_guard.policy.opa_process import ManagedOpa
from jovial_guard.runtime.image import ensure_notebook_image
from jovial_guard.runtime.podman import PodmanService
from jovial_guard.spawn.network import namespace_key
from jovial_guard.spawn.stack import EmbeddedStack, StackSettings, temp_state_dir

def _session_names() -> tuple[str, str, str]:
    """Names unique to this test session, so concurrent sessions on one machine (other
    suites, other checkouts) never remove or route each other's containers and namespaces."""
    tag = secrets.token_hex(2)
    taken = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                           check=False).stdout
    for _ in range(50):
        second = 160 + secrets.randbelow(80)
        if f"10.{second}." not in taken:
            break
    return f"jgtest{tag}", f"jt{tag}", f"10.{second}.0.0/16"


#: Everything this fixture makes carries these names, so teardown can find it all.
NAME_PREFIX, NETNS_PREFIX, EGRESS_POOL = _session_names()
HOME_VOLUME = NAME_PREFIX + "-home-{username}"


class SpawnFailed(Exception):
    """The hub refused or failed a spawn; ``status`` and ``message`` are the API's answer."""

    def __init__(self, status: int, message: str, hub_log: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}" + (f"\nhub log:\n{hub_log}" if hub_log else ""))
        self.status = status
        self.message = message


class EmbeddedHub:
    """A running embedded hub for tests.

    Attributes and methods (keep stable, other test suites use them):

    * ``url``: the public proxy URL (``http://127.0.0.1:PORT``); ``api_url`` = url + /hub/api
    * ``api_token``: token of an admin service (full admin scopes)
    * ``api(method, path, **kwargs) -> requests.Response``: Hub REST API call with the token
    * ``ensure_user(username, groups=())``: create the user if needed; make its group
      membership exactly ``groups`` (groups are created on demand)
    * ``spawn(username, profile="default", groups=None, timeout=120) -> dict``: start the
      user's default server through the REST API (as a user would) and wait until ready;
      a running server with the same profile is reused. Raises :class:`SpawnFailed`
      carrying the hub's status and message (e.g. a policy denial).
    * ``stop(username, timeout=60)``: stop the user's server and wait until it is gone
    * ``container(username)``: the docker-py Container (raises LookupError if none)
    * ``container_exists(username) -> bool``
    * ``exec(username, cmd: list[str], timeout=120) -> (rc, output)``: run a command in the
      user's container as the container user (1000)
    * ``docker``: docker-py client on the project's podman service
    * ``opa``: the ManagedOpa the hub asks; ``opa_endpoint``: an OpaEndpoint for it
    * ``egress``: the EgressNamespaces of this hub (attach test hosts with
      ``egress.attach_service(name, address)``); ``user_rules(username)``: the nftables
      ruleset installed in the user's namespace
    * ``decisions() -> list[dict]``: the hub's decision log (one dict per spawn decision)
    * ``policy_revision()``, ``deploy_policy(dir)``, ``activate_policy(revision)``: the hub's
      policy store, switched as a deploy switches it (the hub and OPA waited for)
    * ``state_dir``, ``hub_log()``: the hub's files and log tail
    """

    def __init__(self, stack: EmbeddedStack) -> None:
        self.stack = stack
        settings = stack.settings
        self.url = settings.url
        self.api_url = settings.url + "/hub/api"
        self.api_token = settings.api_token or ""
        self.state_dir = settings.state_dir
        if stack.opa is None or stack.podman is None:
            raise RuntimeError("EmbeddedHub needs a started stack")
        self.opa: ManagedOpa = stack.opa
        self.opa_endpoint = OpaEndpoint(stack.opa.url)
        self.docker = stack.podman.docker_client()
        self.egress: EgressNamespaces = stack.egress
        self._profiles: dict[str, str] = {}
        self.users: set[str] = set()

    # -- REST API -----------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.api_token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers,
                                timeout=kwargs.pop("timeout", 30), **kwargs)

    def ensure_user(self, username: str, groups: tuple[str, ...] | list[str] = ()) -> None:
        if self.api("GET", f"/users/{username}").status_code == 404:
            resp = self.api("POST", f"/users/{username}")
            resp.raise_for_status()
        self.users.add(username)
        info = self.api("GET", f"/users/{username}").json()
        current = set(info.get("groups", []))
        for group in set(groups) - current:
            if self.api("GET", f"/groups/{group}").status_code == 404:
                self.api("POST", f"/groups/{group}").raise_for_status()
            self.api("POST", f"/groups/{group}/users", json={"users": [username]}).raise_for_status()
        for group in current - set(groups):
            self.api("DELETE", f"/groups/{group}/users", json={"users": [username]}).raise_for_status()

    def _server(self, username: str) -> dict[str, Any] | None:
        resp = self.api("GET", f"/users/{username}")
        if resp.status_code != 200:
            return None
        server = resp.json().get("servers", {}).get("")
        return server if isinstance(server, dict) else None

    def spawn(self, username: str, profile: str = "default",
              groups: tuple[str, ...] | list[str] | None = None,
              timeout: float = 120) -> dict[str, Any]:
        if groups is not None:
            self.ensure_user(username, groups)
        elif username not in self.users:
            self.ensure_user(username, ())
        server = self._server(username)
        if server and server.get("ready") and self._profiles.get(username) == profile:
            return server
        if server:
            self.stop(username)
        resp = self.api("POST", f"/users/{username}/server", json={"profile": profile},
                        timeout=timeout)
        if resp.status_code not in (201, 202):
            # A refusal is the expected answer of many tests; anything else needs the hub's side.
            raise SpawnFailed(resp.status_code, _message(resp),
                              self.hub_log() if resp.status_code >= 500 else "")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.api("GET", f"/users/{username}").json()
            server = info.get("servers", {}).get("")
            if server and server.get("ready"):
                self._profiles[username] = profile
                return dict(server)
            if not server or (not server.get("pending") and not server.get("ready")):
                progress = self.api("GET", f"/users/{username}/server/progress",
                                    stream=True, timeout=10)
                raise SpawnFailed(500, _last_progress(progress) or "server stopped while starting")
            time.sleep(0.25)
        raise SpawnFailed(504, f"{username}'s server was not ready within {timeout:.0f}s")

    def stop(self, username: str, timeout: float = 60) -> None:
        self._profiles.pop(username, None)
        resp = self.api("DELETE", f"/users/{username}/server", timeout=timeout)
        if resp.status_code not in (202, 204, 400, 404):
            resp.raise_for_status()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self._server(username)
            if not server:
                return
            time.sleep(0.25)
        raise TimeoutError(f"{username}'s server did not stop within {timeout:.0f}s")

    # -- containers -----------------------------------------------------------------------
    def container_name(self, username: str) -> str:
        return f"{NAME_PREFIX}-{username}"

    def container(self, username: str) -> Any:
        try:
            return self.docker.containers.get(self.container_name(username))
        except docker.errors.NotFound as exc:
            raise LookupError(f"no container for {username}") from exc

    def container_exists(self, username: str) -> bool:
        try:
            self.container(username)
        except LookupError:
            return False
        return True

    def exec(self, username: str, cmd: list[str], timeout: float = 120) -> tuple[int, str]:
        """Run ``cmd`` in the user's container; ``timeout -s KILL`` bounds it inside."""
        container = self.container(username)
        wrapped = ["timeout", "-s", "KILL", str(int(timeout)), *cmd]
        result = container.exec_run(wrapped, demux=False)
        output = result.output.decode(errors="replace") if result.output else ""
        return int(result.exit_code if result.exit_code is not None else -1), output

    def user_rules(self, username: str) -> str:
        return self.egress.rules(namespace_key(username))

    def decisions(self) -> list[dict[str, Any]]:
        path = self.state_dir / "decisions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def hub_log(self, lines: int = 80) -> str:
        return self.stack.hub.log_tail(lines) if self.stack.hub else ""

    # -- policy ---------------------------------------------------------------------------
    def policy_revision(self) -> str:
        """The store's active revision: what the hub decides with once it has followed it."""
        assert self.stack.store is not None
        return str(self.stack.store.current())

    def activate_policy(self, revision: str, timeout: float = 60) -> None:
        """Activate ``revision`` in the hub's policy store and wait until the hub (which
        decides with the bundle's compiled policy) and OPA serve it, as a deploy does."""
        import asyncio

        from jovial_guard.policy.lifecycle import wait_for_revision
        from jovial_guard.policy.replicas import wait_workers

        assert self.stack.store is not None and self.stack.bundle_server is not None
        self.stack.store.activate(revision)

        async def switched() -> None:
            await wait_workers(self.stack.bundle_server.url, revision, timeout=timeout)  # type: ignore[union-attr]
            await wait_for_revision(self.opa_endpoint, revision, timeout=timeout)

        asyncio.run(switched())

    def deploy_policy(self, policy_dir: Path) -> str:
        """``policy_dir`` as a new revision of the hub's store, activated (see above)."""
        assert self.stack.store is not None
        revision = self.stack.store.add(policy_dir)
        self.activate_policy(revision)
        return revision

    # -- teardown -------------------------------------------------------------------------
    def cleanup(self) -> None:
        for username in sorted(self.users):
            try:
                self.stop(username, timeout=30)
            except Exception:  # noqa: BLE001 - teardown removes what is left below
                pass
        self.stack.stop()  # hub stops servers and proxy; egress teardown; podman; OPA
        remove_leftovers()


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message", resp.text))
    except ValueError:
        return resp.text


def _last_progress(resp: requests.Response) -> str:
    last = ""
    try:
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                last = str(event.get("message", last))
                if event.get("failed") or event.get("ready"):
                    break
    except (requests.RequestException, ValueError):
        pass
    return last


def remove_leftovers() -> None:
    """Remove every container, volume and namespace named by this fixture's prefixes."""
    from jovial_guard.runtime.podman import PodmanService

    podman = PodmanService().podman_args()
    names = subprocess.run(podman + ["ps", "-a", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=False).stdout.split()
    ours = [n for n in names if n.startswith(NAME_PREFIX + "-")]
    if ours:
        subprocess.run(podman + ["rm", "-f", "-t", "0", *ours], capture_output=True, check=False)
    vols = subprocess.run(podman + ["volume", "ls", "--format", "{{.Name}}"],
                          capture_output=True, text=True, check=False).stdout.split()
    ours = [v for v in vols if v.startswith(NAME_PREFIX + "-home-")]
    if ours:
        subprocess.run(podman + ["volume", "rm", "-f", *ours], capture_output=True, check=False)
    EgressNamespaces(NETNS_PREFIX, pool=EGRESS_POOL).teardown()


def embedded_settings(state_dir: Path) -> StackSettings:
    """Settings of the test hub: free ports, own socket, names and address pool."""
    return StackSettings.ephemeral(
        state_dir,
        netns_prefix=NETNS_PREFIX,
        egress_pool=EGRESS_POOL,
        engine_socket=state_dir / "podman.sock",
        # The red-team tests kill OPA on purpose to prove fail-closed spawns; the
        # supervisor is tested on its own stack (test_guard_up.py).
        supervise=False,
        extra_env={
            "JOVIAL_GUARD_NAME_PREFIX": NAME_PREFIX,
            "JOVIAL_GUARD_HOME_VOLUME": HOME_VOLUME,
            # Two servers start at a time, so three users at once exercise the queue.
            "JOVIAL_GUARD_START_SLOTS": "2",
        },
    )


@pytest.fixture(scope="session")
def embedded_hub() -> Iterator[EmbeddedHub]:
    """Start OPA, podman, the image check and JupyterHub once for the session."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/install-system.sh")
    state_dir = temp_state_dir("jovial-guard-test-hub-")
    stack = EmbeddedStack(embedded_settings(state_dir), progress=lambda m: None)

    def _interrupt(signum: int, frame: object) -> None:
        # A CI timeout sends SIGTERM: turn it into KeyboardInterrupt so this fixture's
        # teardown still removes every container, volume, namespace and process it made.
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    stack.start()
    hub = EmbeddedHub(stack)
    try:
        yield hub
    finally:
        hub.cleanup()
        signal.signal(signal.SIGTERM, previous)
        if not os.environ.get("JOVIAL_GUARD_KEEP_TEST_STATE"):
            shutil.rmtree(state_dir, ignore_errors=True)


def unmount_tree(path: Path) -> None:
    """Unmount what an engine storage left mounted below ``path`` (podman keeps its overlay
    directory mounted after the service stops), so the directory can be removed."""
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True,
                            check=False).stdout.splitlines()
    for target in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@pytest.fixture
def unmount_below(tmp_path: Path) -> Iterator[None]:
    """:func:`unmount_tree` of the test's tmp_path after the test."""
    yield
    unmount_tree(tmp_path)


@pytest.fixture(scope="module")
def notebook_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    """A podman service of the run's engine storage with the notebook image imported, on a
    socket of this module's own."""
    sock = tmp_path_factory.mktemp("engine") / "podman.sock"
    with PodmanService(socket_path=sock) as service:
        ensure_notebook_image(service, progress=lambda m: print(m, file=sys.stderr))
        yield service
