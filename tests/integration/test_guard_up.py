"""The README's first command, run as a user runs it: ``./guard up`` from an empty state root.

One real ``./guard up`` subprocess (set-up steps, then ``jovial-guard up``) with a brand-new
state directory and engine storage. The test waits for the login page, logs in and spawns
through the spawn page, runs a cell, then kills OPA and the engine service with SIGKILL and
shows that ``up`` restarts each and spawns work again within seconds, that spawns go on
while OPA hangs (the hub decides with its compiled policy), and finally sends SIGTERM and checks
that no container, network namespace, podman or OPA process is left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jovial_guard.paths import cache_dir
from jovial_guard.policy.opa_process import free_loopback_port
from jovial_guard.runtime.podman import PodmanService, default_runroot

from .conftest import EGRESS_POOL, unmount_tree
from .userflow import login, run_cell, spawn_from_form

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300.0


class GuardUp:
    """A running ``./guard up`` and the paths it was given."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.hub_state = state / "hub"
        self.socket = state / "run" / "podman.sock"
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(24)
        tag = secrets.token_hex(2)
        self.netns_prefix = f"ju{tag}"
        # A /16 beside the shared test hub's, so both can run in one session.
        second = int(EGRESS_POOL.split(".")[1])
        self.pool = f"10.{second - 1 if second > 160 else second + 1}.0.0/16"
        self.log_path = state.parent / "guard-up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, JOVIAL_GUARD_STATE_DIR=str(self.state), JOVIAL_GUARD_CACHE=str(self.cache()),
                   JOVIAL_GUARD_API_TOKEN=self.token, JOVIAL_GUARD_PASSWORD=self.password)
        env.pop("JOVIAL_GUARD_HUB_STATE_DIR", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["./guard", "up", "--port", str(self.port), "--hub-port", str(free_loopback_port()),
                 "--proxy-api-port", str(free_loopback_port()), "--engine-socket", str(self.socket),
                 "--netns-prefix", self.netns_prefix, "--egress-pool", self.pool],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def cache(self) -> Path:
        """A cache holding only the real cache's build artefacts: whatever else the real
        one holds (an older layout's state, say) is not this test's to migrate."""
        cache = self.state.parent / "cache"
        cache.mkdir(exist_ok=True)
        for name in ("tools", "venv", "images"):
            link = cache / name
            if not link.exists():
                link.symlink_to(cache_dir() / name)
        return cache

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}", timeout=30,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)  # type: ignore[arg-type]

    def wait_for_login_page(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"./guard up exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                page = requests.get(f"{self.url}/hub/login", timeout=2)
                if page.status_code == 200 and 'name="password"' in page.text:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        pytest.fail(f"no login page at {self.url} within {START_TIMEOUT:.0f}s:\n{self.log()[-4000:]}")

    def opa_pid(self) -> int:
        runtime = json.loads((self.hub_state / "runtime.json").read_text())
        port = runtime["opa_url"].rsplit(":", 1)[1]
        pids = [pid for pid, argv in _processes() if "opa" in Path(argv[0]).name
                and f"127.0.0.1:{port}" in argv]
        assert len(pids) == 1, pids
        return pids[0]

    def engine_pid(self) -> int:
        return int(Path(str(self.socket) + ".pid").read_text().split()[0])

    def engine(self) -> PodmanService:
        return PodmanService(self.socket, root=self.state / "engine" / "root")


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv:
            yield int(entry.name), argv


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _wait_until(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"{what} not within {timeout:.0f}s")


@pytest.fixture(scope="module")
def guard_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardUp]:
    state = tmp_path_factory.mktemp("guard-up") / "state"
    assert not state.exists()
    up = GuardUp(state)
    up.start()
    try:
        up.wait_for_login_page()
        yield up
    finally:
        if up.proc is not None and up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGTERM)
            try:
                up.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(up.proc.pid, signal.SIGKILL)
                up.proc.wait(timeout=30)
        unmount_tree(state)


def _spawn_and_run_cell(up: GuardUp, username: str) -> dict[str, object]:
    session = login(up.url, username, up.password)
    error = spawn_from_form(session, up.url, username, "default", timeout=180)
    assert error == "", error
    return run_cell(up.url, username, session,
                    "import numpy, astropy; print(int(numpy.arange(5).sum()), astropy.__name__)")


def test_up_from_empty_state_serves_spawns_and_runs_a_cell(guard_up: GuardUp) -> None:
    log = guard_up.log()
    assert f"state: {guard_up.hub_state}" in log
    assert (guard_up.hub_state / "policy-store").is_dir()
    assert (guard_up.state / "engine" / "root").is_dir()
    out = _spawn_and_run_cell(guard_up, "ada")
    assert out["status"] == "ok", out
    assert out["stdout"] == "10 astropy\n", out


def test_a_hung_opa_does_not_stop_spawns(guard_up: GuardUp) -> None:
    """A hung OPA (SIGSTOP: alive, silent) is not restarted, and spawns go on: the hub
    decides with the compiled policy it holds (the plain message a user reads when no
    policy can decide: tests/unit/test_spawn_compiled_policy.py)."""
    pid = guard_up.opa_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        session = login(guard_up.url, "bea", guard_up.password)
        error = spawn_from_form(session, guard_up.url, "bea", "default", timeout=120)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert error == "", error
    hub_log = (guard_up.hub_state / "jupyterhub.log").read_text(errors="replace")
    assert "jovial_guard: admitted bea" in hub_log
    assert "supervisor: opa exited" not in guard_up.log()


@pytest.mark.parametrize("victim", ["opa", "container engine"])
def test_up_restarts_a_killed_service(guard_up: GuardUp, victim: str) -> None:
    pid = guard_up.opa_pid() if victim == "opa" else guard_up.engine_pid()
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: f"supervisor: {victim} restarted" in guard_up.log()
                and (guard_up.opa_pid() if victim == "opa" else guard_up.engine_pid()) != pid,
                30, f"{victim} restarted by up")
    assert f"supervisor: {victim} exited; restarting" in guard_up.log()
    user = "cyd" if victim == "opa" else "dee"
    started = time.monotonic()
    resp = guard_up.api("POST", f"/users/{user}")
    assert resp.status_code in (201, 409), resp.text
    resp = guard_up.api("POST", f"/users/{user}/server")
    assert resp.status_code in (201, 202), resp.text
    _wait_until(lambda: guard_up.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"),
                60, f"{user}'s server ready after {victim} was killed")
    assert time.monotonic() - started < 60


def test_sigterm_leaves_nothing_behind(guard_up: GuardUp) -> None:
    assert guard_up.proc is not None
    engine = guard_up.engine()
    os.killpg(guard_up.proc.pid, signal.SIGTERM)
    assert guard_up.proc.wait(timeout=120) == 0, guard_up.log()[-3000:]
    assert "==> stopped" in guard_up.log()
    assert not [n for n in _netns() if n.startswith(guard_up.netns_prefix + "-")]
    leftovers = [(pid, argv) for pid, argv in _processes()
                 if any(str(guard_up.state) in a or str(guard_up.socket) in a for a in argv)]
    assert leftovers == []
    # The engine's own view of its storage (read with the CLI, no service running).
    engine.write_config()
    names = subprocess.run(engine.podman_args() + ["ps", "-a", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert names == []
    assert not default_runroot(engine.root).joinpath("libpod", "tmp", "pause.pid").exists()
