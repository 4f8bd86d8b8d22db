"""The pre-spawn hook against a real OPA: admitted spawns are hardened, denials carry the
policy's reason, and every failure (OPA down, profile missing) refuses. Egress namespaces
are covered by the integration tests; here ``egress`` is off, so the container would get
no network at all (never an unfiltered one).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa
from jovial_guard.runtime.image import NOTEBOOK_IMAGE
from jovial_guard.spawn.guard import JovialGuard, SpawnRefused, StartupRefused
from jovial_guard.spawn.options import options_from_form, render_options_form
from jovial_guard.spawn.spawner import GuardedDockerSpawner
from jovial_guard.spawn.workload import requested_profile, spawn_workload
from jovial_guard.errors import MalformedInput


def _spawner(name: str, groups: tuple[str, ...], profile: str | None = None) -> Any:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups], admin=False)
    return SimpleNamespace(
        user=user, image=NOTEBOOK_IMAGE, name="", escaped_name=name, _log_name=name,
        user_options={"profile": profile} if profile else {},
        guard_hardened=False, log=logging.getLogger("test-spawner"),
    )


def _guard(opa_url: str, **kwargs: Any) -> JovialGuard:
    return JovialGuard(opa_url=opa_url, egress=False, apparmor_supported=False, deadline=5.0, **kwargs)


def test_workload_is_pod_shaped() -> None:
    w = spawn_workload(username="Alice.S", groups=("b", "a", "a"), admin=True,
                       image=NOTEBOOK_IMAGE, profile="default")
    assert w.origin == "spawn"
    assert w.user is not None and w.user.groups == ("a", "b") and w.user.admin
    assert w.pod["metadata"]["annotations"]["hub.jupyter.org/username"] == "Alice.S"
    assert w.pod["spec"]["containers"] == [
        {"name": "notebook", "image": NOTEBOOK_IMAGE, "resources": {}}
    ]
    assert w.to_input()["workload"]["profile"] == "default"


@pytest.mark.parametrize(("options", "expected"), [
    ({}, "default"), ({"profile": "gpu"}, "gpu"), ({"profile": ["large-memory"]}, "large-memory"),
    ({"profile": []}, "default"), ({"profile": "  "}, "default"),
])
def test_requested_profile(options: dict[str, Any], expected: str) -> None:
    assert requested_profile(options, default="default") == expected


def test_requested_profile_rejects_non_string() -> None:
    with pytest.raises(MalformedInput, match="user_options.profile"):
        requested_profile({"profile": {"x": 1}}, default="default")


def test_options_form_round_trip() -> None:
    form = render_options_form({"default": "small", "gpu": "<b>big</b>"}, default="default")
    assert 'value="gpu"' in form and "&lt;b&gt;" in form and "checked" in form
    assert options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}
    assert options_from_form({}) == {}


async def test_allowed_spawn_is_hardened(opa: ManagedOpa) -> None:
    guard = _guard(opa.url)
    spawner = _spawner("alice", ("astro", "large-memory"), "large-memory")
    record = await guard.pre_spawn(spawner)
    await guard.close()
    hc = spawner.extra_host_config
    assert spawner.guard_hardened is True
    assert hc["read_only"] is True
    assert hc["cap_drop"] == ["ALL"]
    assert f"seccomp={Path(guard.seccomp_profile_dir).absolute() / 'notebook.json'}" in hc["security_opt"]
    assert record["hardening"]["seccomp"]["name"] == "jovial-guard/notebook.json"
    assert record["hardening"]["seccomp"]["audited"] is False
    assert "no-new-privileges" in hc["security_opt"]
    assert hc["network_mode"] == "none"
    assert hc["mem_limit"] == 8 * 2**30 and hc["nano_cpus"] == 2 * 10**9
    assert spawner.extra_create_kwargs == {"user": "1000:100"}
    assert spawner.volumes == {"jovial-guard-home-alice": {"bind": "/home/jovyan", "mode": "rw,U"}}
    assert spawner.cpu_limit is None and spawner.use_internal_ip is True
    assert record["hardening"]["apparmor"]["status"] == "unsupported"
    assert record["profile"] == "large-memory"
    assert record["policy_revision"] == opa.revision


async def test_denied_spawn_carries_policy_message(opa: ManagedOpa) -> None:
    guard = _guard(opa.url)
    spawner = _spawner("bob", ("astro",), "large-memory")
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(spawner)
    await guard.close()
    exc = caught.value
    assert exc.status_code == 403
    assert exc.rule == "profiles/not-allowed"
    assert "large-memory" in exc.jupyterhub_message and "you are in astro" in exc.jupyterhub_message
    assert str(exc) == exc.jupyterhub_message
    assert spawner.guard_hardened is False
    assert not hasattr(spawner, "extra_host_config")


async def test_listeners_hear_every_decision(opa: ManagedOpa) -> None:
    heard: list[tuple[str, bool]] = []
    guard = _guard(opa.url, decision_listeners=[
        lambda workload, decision, seconds: heard.append((workload.user.name, decision.allowed))
    ])
    await guard.pre_spawn(_spawner("carol", ()))
    with pytest.raises(SpawnRefused):
        await guard.pre_spawn(_spawner("dave", (), "gpu"))
    await guard.close()
    assert heard == [("carol", True), ("dave", False)]


async def test_opa_down_refuses_spawn() -> None:
    server = ManagedOpa().start()
    url = server.url
    server.kill()
    server.stop()
    guard = _guard(url)
    spawner = _spawner("erin", ())
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(spawner)
    await guard.close()
    assert caught.value.rule == "policy-engine-unavailable"
    assert caught.value.status_code == 503
    assert spawner.guard_hardened is False


async def test_missing_seccomp_profile_refuses_spawn(opa: ManagedOpa, tmp_path: Path) -> None:
    guard = _guard(opa.url, seccomp_profile_dir=str(tmp_path))
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(_spawner("frank", ()))
    await guard.close()
    assert caught.value.rule == "jovial-guard/seccomp-profile-missing"
    assert "notebook.json does not exist" in str(caught.value)


async def test_weak_seccomp_profile_refuses_spawn(opa: ManagedOpa, tmp_path: Path) -> None:
    (tmp_path / "notebook.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}))
    guard = _guard(opa.url, seccomp_profile_dir=str(tmp_path))
    with pytest.raises(SpawnRefused, match="does not deny by default"):
        await guard.pre_spawn(_spawner("gina", ()))
    await guard.close()


def _policies_choosing(tmp_path: Path, seccomp_name: str) -> Path:
    """A copy of the policies whose data names ``seccomp_name`` for the default profile."""
    policies = tmp_path / f"policies-{seccomp_name}"
    shutil.copytree(DEFAULT_POLICY_DIR, policies)
    data = json.loads((policies / "data.json").read_text())
    data["settings"]["profiles"]["default"]["seccomp"] = seccomp_name
    (policies / "data.json").write_text(json.dumps(data))
    return policies


async def test_profile_chosen_by_policy_data_reaches_the_engine(tmp_path: Path) -> None:
    """An admin names the learned profile for the default notebook profile in policy data:
    the decision carries it and the container gets that file, never the default one."""
    with ManagedOpa(_policies_choosing(tmp_path, "notebook-learned")) as opa:
        guard = _guard(opa.url)
        spawner = _spawner("hana", ())
        record = await guard.pre_spawn(spawner)
        await guard.close()
    learned = Path(guard.seccomp_profile_dir).absolute() / "notebook-learned.json"
    assert f"seccomp={learned}" in spawner.extra_host_config["security_opt"]
    assert record["hardening"]["seccomp"]["name"] == "jovial-guard/notebook-learned.json"


async def test_unknown_seccomp_profile_in_policy_data_is_a_clear_denial(tmp_path: Path) -> None:
    with ManagedOpa(_policies_choosing(tmp_path, "unconfined")) as opa:
        guard = _guard(opa.url)
        spawner = _spawner("ivan", ())
        with pytest.raises(SpawnRefused) as caught:
            await guard.pre_spawn(spawner)
        await guard.close()
    assert caught.value.rule == "profiles/seccomp-unknown"
    assert caught.value.status_code == 403
    assert '"unconfined", which is not installed' in str(caught.value)
    assert not hasattr(spawner, "extra_host_config")


async def test_audited_profile_needs_the_agent(opa: ManagedOpa, tmp_path: Path) -> None:
    guard = _guard(opa.url, seccomp_agent_socket=str(tmp_path / "agent.sock"), seccomp_agent_wait=0.5)
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(_spawner("jane", ()))
    await guard.close()
    assert caught.value.rule == "jovial-guard/seccomp-agent-unavailable"
    assert caught.value.status_code == 503


def test_startup_refuses_with_every_problem(tmp_path: Path) -> None:
    guard = JovialGuard(
        opa_url="http://127.0.0.1:9",  # nothing listens on the discard port
        seccomp_profile_dir=str(tmp_path / "missing-seccomp"),
        apparmor_profile_path=str(tmp_path / "missing-apparmor"),
        engine_socket=str(tmp_path / "no.sock"),
        egress=False,
    )
    with pytest.raises(StartupRefused) as caught:
        guard.check_startup()
    text = str(caught.value)
    assert "OPA" in text and "unreachable" in text
    assert "no seccomp profiles (*.json) in" in text and "seccomp_profile_dir" in text
    assert "missing-apparmor does not exist" in text
    assert "no.sock is missing" in text


def test_startup_refuses_without_opa_url(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="opa_url is not set"):
        JovialGuard(egress=False, engine_socket=str(tmp_path / "x")).check_startup()


async def test_spawner_refuses_without_hook() -> None:
    stand_in = SimpleNamespace(guard_hardened=False)
    with pytest.raises(SpawnRefused) as caught:
        await GuardedDockerSpawner.start(stand_in)  # type: ignore[arg-type]
    assert caught.value.rule == "jovial-guard/hook-missing"


async def test_audited_profile_routes_refusals_to_the_agent(opa: ManagedOpa, tmp_path: Path) -> None:
    import socket

    agent = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(agent))
        guard = _guard(opa.url, seccomp_agent_socket=str(agent), seccomp_audited_dir=str(tmp_path / "audited"))
        spawner = _spawner("kate", ())
        record = await guard.pre_spawn(spawner)
        await guard.close()
    [option] = [o for o in spawner.extra_host_config["security_opt"] if o.startswith("seccomp=")]
    audited = Path(option.removeprefix("seccomp="))
    assert audited.parent == tmp_path / "audited" and audited.name.startswith("notebook-")
    profile = json.loads(audited.read_text())
    assert profile["listenerPath"] == str(agent)
    assert profile["listenerMetadata"] == "jovial-guard/notebook.json"
    assert any(r["action"] == "SCMP_ACT_NOTIFY" and "mount" in r["names"] for r in profile["syscalls"])
    assert record["hardening"]["seccomp"] == {"status": "applied", "profile": str(audited),
                                             "name": "jovial-guard/notebook.json", "audited": True}


async def test_each_user_gets_their_own_block_in_the_spawn(opa: ManagedOpa, tmp_path: Path) -> None:
    from jovial_guard.hardening.subids import BLOCK, IdRange
    from jovial_guard.hardening.userns import UserRanges

    guard = _guard(opa.url, user_namespaces=True)
    guard._ranges = UserRanges(tmp_path / "userns.json", IdRange(1_000_000_000, 4 * BLOCK))
    modes = {}
    for name in ("alice", "bob", "alice"):
        spawner = _spawner(name, ("astro",))
        record = await guard.pre_spawn(spawner)
        modes[name] = spawner.extra_create_kwargs["host_config"]["UsernsMode"]
        assert record["hardening"]["user_namespace"]["status"] == "applied"
        assert spawner.extra_host_config["tmpfs"]["/sys"].startswith("ro,")
    assert modes["alice"] == "auto:size=65536,uidmapping=0:1000000000:65536,gidmapping=0:1000000000:65536"
    assert modes["bob"] == "auto:size=65536,uidmapping=0:1000065536:65536,gidmapping=0:1000065536:65536"

    (tmp_path / "userns.json").write_text("{broken")
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(_spawner("carol", ("astro",)))
    await guard.close()
    assert caught.value.rule == "jovial-guard/userns-unavailable" and caught.value.status_code == 503
