"""The project-owned podman service: starts, answers, logs events, copes with leftovers.

Real podman throughout; each test uses its own socket (and, where it creates containers,
the module's engine), so it never disturbs a hub running on the default socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jovial_guard.runtime.image import (
    NOTEBOOK_IMAGE,
    NOTEBOOK_REPOSITORY,
    RECIPE_LABEL,
    ensure_notebook_image,
    image_recipe,
    recipe_key,
)
from jovial_guard.runtime.podman import (
    EngineUnavailable,
    PodmanService,
    _alive,
    render_containers_conf,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "podman.sock"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    with PodmanService(socket_path=tmp_path_factory.mktemp("svc") / "podman.sock") as service:
        # Each test run has fresh engine storage: the import path runs here every time.
        ensure_notebook_image(service, progress=lambda m: None)
        yield service


def test_containers_conf_pins_runtime_and_disables_networks(tmp_path: Path) -> None:
    text = render_containers_conf(tmpdir=tmp_path / "t", events_path=tmp_path / "e.log",
                                  network_dir=tmp_path / "n", cni_plugin_dir=tmp_path / "none",
                                  runc=tmp_path / "runc")
    for line in ('runtime = "runc"', f'runc = ["{tmp_path / "runc"}"]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"',
                 f'events_logfile_path = "{tmp_path / "e.log"}"', 'netns = "none"',
                 'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
                 f'cni_plugin_dirs = ["{tmp_path / "none"}"]', 'lock_type = "file"',
                 'base_hosts_file = "image"', 'host_containers_internal_ip = "none"'):
        assert line in text


def test_service_answers_with_project_storage(engine: PodmanService) -> None:
    client = engine.docker_client()
    try:
        assert client.ping()
        info = client.info()
        assert info["Driver"] == "overlay"
        assert engine.base_url.startswith("unix:///")
    finally:
        client.close()
    out = subprocess.run(engine.podman_args() + ["info", "--format",
                                                 "{{.Store.GraphRoot}} {{.Host.OCIRuntime.Name}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(engine.root), "runc"]


def test_engine_events_go_to_the_events_file(engine: PodmanService) -> None:
    before = engine.events_path.stat().st_size if engine.events_path.exists() else 0
    client = engine.docker_client()
    try:
        container = client.containers.create(NOTEBOOK_IMAGE, ["true"], network_mode="none",
                                             labels={"org.jovial-guard.test": "podman-service"})
        container.remove(force=True)
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if engine.events_path.exists() and engine.events_path.stat().st_size > before:
            break
        time.sleep(0.1)
    tail = engine.events_path.read_bytes()[before:].decode(errors="replace")
    assert container.id in tail and '"Status":"create"' in tail.replace(" ", "")


def test_podman_bridge_network_cannot_start(engine: PodmanService) -> None:
    """Docker API callers that name no network get podman's "bridge" (the compat API ignores
    containers.conf ``netns``). It must fail closed: its CNI plugins are unreachable, so the
    host firewall is never edited. The start runs inside a throwaway namespace, so even a
    regression here could not touch the host's ruleset."""
    client = engine.docker_client()
    sandbox = f"jgk-sandbox-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", sandbox], check=True)
    try:
        container = client.containers.create(NOTEBOOK_IMAGE, ["true"],
                                             labels={"org.jovial-guard.test": "podman-service"})
        try:
            assert container.attrs["HostConfig"]["NetworkMode"] == "bridge"
            started = subprocess.run(["ip", "netns", "exec", sandbox] + engine.podman_args()
                                     + ["start", container.id], capture_output=True, text=True,
                                     timeout=60)
        finally:
            container.remove(force=True)
        assert started.returncode != 0
        assert 'failed to find plugin "bridge"' in started.stderr, started.stderr
    finally:
        client.close()
        subprocess.run(["ip", "netns", "del", sandbox], check=False)


def test_stale_socket_file_is_replaced(sock: Path) -> None:
    sock.write_text("left by a crash")
    with PodmanService(socket_path=sock) as service:
        assert service.ping()
    assert not sock.exists()


def test_leftover_of_a_crashed_run_is_stopped_and_replaced(sock: Path) -> None:
    """A starter that died without stop() leaves a running service: the next start ends it."""
    crashed = subprocess.run(
        [sys.executable, "-c",
         "import os, sys\n"
         "from jovial_guard.runtime.podman import PodmanService\n"
         "s = PodmanService(socket_path=sys.argv[1]).start()\n"
         "print(s.pid, flush=True)\n"
         "os._exit(0)\n", str(sock)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    old_pid = int(crashed.stdout.split()[0])
    assert Path(f"/proc/{old_pid}").exists()
    service = PodmanService(socket_path=sock)
    try:
        service.start()
        assert service.pid != old_pid and service.ping()
        deadline = time.monotonic() + 10
        while _alive(old_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(old_pid)  # gone, or a zombie waiting for whoever reaps orphans
    finally:
        service.stop()


def test_service_of_a_live_starter_is_not_taken_over(sock: Path) -> None:
    first = PodmanService(socket_path=sock).start()
    try:
        with pytest.raises(EngineUnavailable, match="still runs"):
            PodmanService(socket_path=sock).start()
        assert first.ping()
    finally:
        first.stop()


def test_foreign_service_on_the_socket_is_refused(sock: Path) -> None:
    """A podman we did not start (no pid file) keeps running; we refuse, we do not kill it."""
    helper = PodmanService(socket_path=sock)
    helper.write_config()
    env = dict(os.environ, CONTAINERS_CONF=str(helper.conf_path),
               CONTAINERS_STORAGE_CONF=str(helper.storage_conf_path))
    argv = helper.podman_args()[3:] + ["system", "service", "--time=0", helper.base_url]
    foreign = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not helper.ping():
            assert time.monotonic() < deadline, "foreign podman never answered"
            time.sleep(0.1)
        with pytest.raises(EngineUnavailable, match="not started by jovial_guard"):
            PodmanService(socket_path=sock).start()
        assert foreign.poll() is None
    finally:
        foreign.terminate()
        foreign.wait(timeout=15)


def test_missing_podman_is_a_clear_error(sock: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailable, match="podman is not installed"):
        PodmanService(socket_path=sock).start()


def test_notebook_image_is_current_and_not_latest(engine: PodmanService) -> None:
    assert NOTEBOOK_IMAGE.startswith(NOTEBOOK_REPOSITORY + ":") and not NOTEBOOK_IMAGE.endswith(":latest")
    assert image_recipe(engine) == recipe_key()
    client = engine.docker_client()
    try:
        image = client.images.get(NOTEBOOK_IMAGE)
    finally:
        client.close()
    config = image.attrs["Config"]
    assert config["User"] == "1000"
    assert config["Cmd"] == ["jupyterhub-singleuser"]
    assert config["Labels"][RECIPE_LABEL] == recipe_key()
    assert not any(tag.endswith(":latest") for tag in image.tags)


def test_recipe_key_follows_the_recipe(tmp_path: Path) -> None:
    from jovial_guard.runtime.image import RECIPE_PARTS, REPO_ROOT

    for part in RECIPE_PARTS:
        shutil.copytree(REPO_ROOT / part, tmp_path / part)
    assert recipe_key(tmp_path) == recipe_key()
    for changed in ("images/notebook/requirements.txt", "images/lib/debian-rootfs.sh"):
        before = recipe_key(tmp_path)
        (tmp_path / changed).write_text((tmp_path / changed).read_text() + "# changed\n")
        assert recipe_key(tmp_path) != before
