"""The embedded hub as a person uses it, and start-up refusing bad configuration.

A user logs in with the shared password, picks a profile on the spawn page, and runs a
notebook cell in a kernel of their hardened server; a profile the policy denies shows the
policy's message on the spawn page; when more users start than the hub starts at once,
the ones waiting see their place in the queue among the spawn page's progress events. A hub whose hardening is incomplete (seccomp profile
missing, container engine socket missing, OPA down) does not start and says why.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from jovial_guard.policy.bundles import SigningKey
from jovial_guard.policy.opa_process import free_loopback_port
from jovial_guard.spawn.stack import HubProcess, StackSettings, StackStartFailed

from . import userflow
from .conftest import EmbeddedHub

pytestmark = pytest.mark.integration


def test_user_logs_in_spawns_and_runs_a_cell(embedded_hub: EmbeddedHub) -> None:
    embedded_hub.ensure_user("gwen", ("astro",))
    password = embedded_hub.stack.settings.password or ""
    session = userflow.login(embedded_hub.url, "gwen", password)
    error = userflow.spawn_from_form(session, embedded_hub.url, "gwen", "default")
    assert error == ""
    try:
        out = userflow.run_cell(embedded_hub.url, "gwen", session, (
            "import numpy as np, os\n"
            "from astropy import units as u\n"
            "print(int(np.arange(4).sum()), (1 * u.km).to(u.m).value, os.getuid())"
        ))
        assert out["status"] == "ok", out
        assert out["stdout"].split() == ["6", "1000.0", "1000"], out
    finally:
        embedded_hub.stop("gwen")


def test_denied_profile_is_explained_on_the_spawn_page(embedded_hub: EmbeddedHub) -> None:
    embedded_hub.ensure_user("hank", ())
    password = embedded_hub.stack.settings.password or ""
    session = userflow.login(embedded_hub.url, "hank", password)
    error = userflow.spawn_from_form(session, embedded_hub.url, "hank", "large-memory")
    assert "[profiles/not-allowed]" in error
    assert "Choose another profile" in error
    assert not embedded_hub.container_exists("hank")


def _start_hub(embedded_hub: EmbeddedHub, tmp_path: Path, *, env_override: dict[str, str],
               config_extra: str = "") -> str:
    """Start a second hub against the fixture's OPA/podman with one piece broken."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = StackSettings.ephemeral(tmp_path / "state", hub_ready_timeout=60)
    settings.netns_prefix = embedded_hub.stack.settings.netns_prefix
    settings.egress_pool = embedded_hub.stack.settings.egress_pool
    config = tmp_path / "config.py"
    config.write_text(f"load_subconfig({str(embedded_hub.stack.settings.config_file)!r})\n"
                      + config_extra)
    settings.config_file = config
    env = embedded_hub.stack.hub_env()
    env.update({
        "JOVIAL_GUARD_HUB_STATE_DIR": str(settings.state_dir),
        "JOVIAL_GUARD_BIND_URL": settings.url,
        "JOVIAL_GUARD_HUB_PORT": str(settings.hub_port),
        "JOVIAL_GUARD_PROXY_API_PORT": str(settings.proxy_api_port),
        **env_override,
    })
    hub = HubProcess(settings, env=env)
    try:
        with pytest.raises(StackStartFailed) as caught:
            hub.start()
    finally:
        hub.stop()  # also when it started after all: no hub is left running
    return str(caught.value)


def _progress_messages(hub: EmbeddedHub, username: str, timeout: float = 240) -> list[str]:
    """The spawn page's events for ``username`` (JupyterHub's progress API) until ready."""
    messages: list[str] = []
    resp = hub.api("GET", f"/users/{username}/server/progress", stream=True, timeout=timeout)
    deadline = time.monotonic() + timeout
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            event = json.loads(line[5:])
            messages.append(str(event.get("message", "")))
            if event.get("ready") or event.get("failed") or time.monotonic() > deadline:
                break
    return messages


def test_a_queued_user_sees_their_place_on_the_spawn_page(embedded_hub: EmbeddedHub) -> None:
    """The test hub starts two servers at a time (JOVIAL_GUARD_START_SLOTS=2): the third of
    three users starting at once waits, and its spawn page says so, then says it is its turn."""
    users = ["queue-a", "queue-b", "queue-c"]
    for user in users:
        embedded_hub.ensure_user(user, ())
        if embedded_hub._server(user):
            embedded_hub.stop(user)
    answers: dict[str, int] = {}

    def post(user: str) -> None:
        resp = embedded_hub.api("POST", f"/users/{user}/server", json={"profile": "default"}, timeout=240)
        answers[user] = resp.status_code

    posts = []
    try:
        for user in users:
            thread = threading.Thread(target=post, args=(user,))
            thread.start()
            posts.append(thread)
            time.sleep(0.5)  # a known arrival order
        messages = _progress_messages(embedded_hub, "queue-c")
        for thread in posts:
            thread.join(timeout=240)
        assert all(answers.get(u) in (201, 202) for u in users), answers
        waiting = [m for m in messages if m.startswith("waiting:")]
        assert waiting and waiting[0] in (
            "waiting: 0 users ahead of you (2 servers start at a time)",
            "waiting: 1 user ahead of you (2 servers start at a time)",
        ), messages
        assert any(m.startswith("your turn") for m in messages), messages
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if all((embedded_hub._server(u) or {}).get("ready") for u in users):
                break
            time.sleep(0.5)
        assert all((embedded_hub._server(u) or {}).get("ready") for u in users), embedded_hub.hub_log()
    except requests.RequestException as exc:
        pytest.fail(f"the hub did not answer: {exc}\n{embedded_hub.hub_log()}")
    finally:
        for user in users:
            embedded_hub.stop(user)
    log = embedded_hub.hub_log(400)
    assert "jovial_guard: admitted queue-c" in log and "queued_ms=" in log


def test_startup_refused_without_seccomp_profile(embedded_hub: EmbeddedHub, tmp_path: Path) -> None:
    message = _start_hub(embedded_hub, tmp_path, env_override={
        "JOVIAL_GUARD_SECCOMP_PROFILE_DIR": "/nonexistent/seccomp"})
    assert "refuses to start the hub" in message
    assert "no seccomp profiles (*.json) in /nonexistent/seccomp" in message


def test_startup_refused_without_engine_socket(embedded_hub: EmbeddedHub, tmp_path: Path) -> None:
    message = _start_hub(embedded_hub, tmp_path,
                         env_override={"JOVIAL_GUARD_ENGINE_SOCKET": str(tmp_path / "gone.sock")})
    assert "refuses to start the hub" in message
    assert "gone.sock is missing" in message


def test_startup_refused_with_opa_down(embedded_hub: EmbeddedHub, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_loopback_port()}"
    message = _start_hub(embedded_hub, tmp_path / "opa",
                         env_override={"JOVIAL_GUARD_OPA_URL": dead, "JOVIAL_GUARD_POLICY_ENGINE": "opa"})
    assert "refuses to start the hub" in message
    assert f"policy engine (OPA) at {dead} is unreachable" in message


def test_startup_refused_without_a_verified_bundle(embedded_hub: EmbeddedHub, tmp_path: Path) -> None:
    """The hub deciding with the compiled policy starts only on a bundle it could verify."""
    dead = f"http://127.0.0.1:{free_loopback_port()}/bundles/jovial_guard.tar.gz"
    message = _start_hub(embedded_hub, tmp_path / "dead", env_override={"JOVIAL_GUARD_POLICY_BUNDLE_URL": dead})
    assert "refuses to start the hub" in message
    assert f"the policy bundle at {dead} is unreachable" in message
    foreign = tmp_path / "foreign.pem"
    foreign.write_text(SigningKey.load_or_create(tmp_path / "foreign-key").public_pem)
    message = _start_hub(embedded_hub, tmp_path / "foreign", env_override={"JOVIAL_GUARD_POLICY_BUNDLE_KEY": str(foreign)})
    assert "refuses to start the hub" in message
    assert "the policy bundle at " in message and "is refused" in message
