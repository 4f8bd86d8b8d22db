"""The container a real spawn creates is the rendered SpawnPlan, setting for setting.

A real OPA decides, the hook renders and applies the plan (a real egress namespace, real
storage mounts), and a real GuardedDockerSpawner creates and starts the container on the
project's podman. Then two comparisons:

* what the engine received: the ``HostConfig`` docker-py sent for ``create_container`` holds
  every rendered setting with exactly the rendered value, and nothing else but the few keys
  DockerSpawner itself owns (listed below, each checked);
* what the engine made: ``inspect`` of the container against the plan, with the engine's own
  spellings (``RLIMIT_NOFILE``, expanded ``ALL`` capabilities, ``rprivate`` bind options)
  named in one place, and its known additions (the read-only root's tmpfs on /run and
  /var/tmp) listed exactly, so anything else the engine adds fails the test.

The user ``alice@uni.edu`` checks the one namespace naming: the namespace the hook made is
the one :meth:`EgressNamespaces.user_namespace` and the audit's per-user pattern find.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from traitlets.config import Config

from jovial_guard.credentials.hub import StorageCredentials
from jovial_guard.hardening.egress import EgressNamespaces
from jovial_guard.hardening.netns_names import is_user_netns
from jovial_guard.policy.opa_process import ManagedOpa
from jovial_guard.runtime.podman import API_VERSION, PodmanService
from jovial_guard.spawn.guard import JovialGuard
from jovial_guard.spawn.spawner import GuardedDockerSpawner

pytestmark = pytest.mark.integration

PREFIX, POOL = "jgs", "10.214.0.0/16"
NAME_TEMPLATE = "jgspawnapplied-{username}"
#: HostConfig keys DockerSpawner sets itself (not from the plan), with the values it must send.
SPAWNER_OWNED = {"AutoRemove": True, "Links": [], "Mounts": []}
#: Capabilities podman grants by default: ``drop ALL`` must drop each of them.
ENGINE_DEFAULT_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
                       "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
#: Tmpfs podman 4.3's Docker API adds to every read-only root (no API setting turns it off).
ENGINE_TMPFS = {"/run", "/var/tmp"}


@pytest.fixture(scope="module")
def engine(notebook_engine: PodmanService) -> PodmanService:
    return notebook_engine


@pytest.fixture(scope="module")
def namespaces() -> Iterator[EgressNamespaces]:
    ns = EgressNamespaces(PREFIX, pool=POOL)
    ns.teardown()
    try:
        yield ns
    finally:
        ns.teardown()


def _spawner(engine: PodmanService, name: str, groups: tuple[str, ...], config: Config) -> GuardedDockerSpawner:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups], admin=False,
                           url=f"/user/{name}/", id=1, server=None, spawners={})
    hub = SimpleNamespace(api_url="http://10.214.255.253:8081/hub/api", base_url="/hub/",
                          public_host="", url="http://10.214.255.253:8081/hub/")
    spawner = GuardedDockerSpawner(config=config, user=user, hub=hub, name_template=NAME_TEMPLATE,
                                   client_kwargs={"base_url": engine.base_url, "version": API_VERSION})
    spawner.log = logging.getLogger("test-spawner")
    spawner.api_token = "t" * 32
    return spawner


def _record_create(spawner: GuardedDockerSpawner) -> list[dict[str, Any]]:
    """Every ``create_container`` call's keyword arguments, as docker-py sends them."""
    sent: list[dict[str, Any]] = []
    client = spawner.client
    real = client.create_container

    def recording(*args: Any, **kwargs: Any) -> Any:
        sent.append(dict(kwargs))
        return real(*args, **kwargs)

    client.create_container = recording
    return sent


def _binds(volumes: dict[str, dict[str, str]]) -> list[str]:
    """The Docker ``Binds`` strings of DockerSpawner ``volumes`` (as it converts them)."""
    out = []
    for source, bind in volumes.items():
        mode = bind["mode"] + (f",{bind['propagation']}" if "propagation" in bind else "")
        out.append(f"{source}:{bind['bind']}:{mode}")
    return sorted(out)


def _engine_received(sent: dict[str, Any], plan: Any, client: docker.APIClient) -> None:
    rendered = client.create_host_config(**dict(plan.container.host_config))
    host_config = dict(sent["host_config"])
    for key, value in rendered.items():
        assert host_config.get(key) == value, f"HostConfig.{key}: sent {host_config.get(key)!r}, rendered {value!r}"
    assert sorted(host_config.pop("Binds", [])) == _binds({k: dict(v) for k, v in plan.container.volumes.items()})
    extra = {k: v for k, v in host_config.items() if k not in rendered}
    assert extra == SPAWNER_OWNED, f"HostConfig keys the plan did not render: {extra}"
    assert sent["image"] == plan.container.image and sent["user"] == plan.container.user


def _engine_made(info: dict[str, Any], plan: Any) -> None:
    hc, rendered = info["HostConfig"], plan.container.host_config
    assert info["Config"]["Image"] == plan.container.image
    assert info["Config"]["User"] == plan.container.user
    assert hc["ReadonlyRootfs"] is rendered["read_only"] is True
    assert hc["NetworkMode"] == rendered["network_mode"]
    assert hc["Memory"] == hc["MemorySwap"] == rendered["mem_limit"] == rendered["memswap_limit"]
    assert hc["NanoCpus"] == rendered["nano_cpus"] and hc["PidsLimit"] == rendered["pids_limit"]
    assert sorted(hc["SecurityOpt"]) == sorted(rendered["security_opt"])
    assert hc["CapAdd"] in ([], None) and not rendered.get("cap_add")
    # The engine spells drop ALL as every capability it would otherwise grant.
    assert rendered["cap_drop"] == ["ALL"] and ENGINE_DEFAULT_CAPS <= set(hc["CapDrop"])
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in hc["Ulimits"]} == {
        "RLIMIT_" + u["Name"].upper(): (u["Soft"], u["Hard"]) for u in rendered["ulimits"]}
    assert hc["IpcMode"] in ("private", "shareable") and rendered["ipc_mode"] == "private"  # own namespace
    assert set(hc["Tmpfs"]) == set(rendered["tmpfs"]) | ENGINE_TMPFS
    for path, options in rendered["tmpfs"].items():
        assert hc["Tmpfs"][path].startswith(options), (path, hc["Tmpfs"][path])
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    expected = {bind["bind"]: (source, bind) for source, bind in plan.container.volumes.items()}
    assert set(mounts) == set(expected)
    for target, (source, bind) in expected.items():
        mount = mounts[target]
        assert mount["RW"] is ("rw" in bind["mode"].split(","))
        if source.startswith("/"):
            assert mount["Source"] == source and mount["Propagation"] == bind["propagation"]
        else:
            assert mount["Name"] == source


async def _spawn_and_compare(engine: PodmanService, guard: JovialGuard, spawner: GuardedDockerSpawner) -> Any:
    sent = _record_create(spawner)
    record = await guard.pre_spawn(spawner)
    plan = spawner.guard_plan
    assert record["netns"] == (plan.network.name if plan.network else None)
    container_id = None
    try:
        await spawner.start()
        container_id = spawner.object_id
        assert len(sent) == 1
        _engine_received(sent[0], plan, spawner.client)
        info = await asyncio.to_thread(spawner.client.inspect_container, container_id)
        assert info["State"]["Running"] or info["State"]["Status"] in ("running", "exited")
        _engine_made(info, plan)
    finally:
        if container_id:
            await asyncio.to_thread(spawner.client.remove_container, container_id, v=False, force=True)
    return plan


async def test_real_spawn_is_the_rendered_plan_and_the_namespace_is_found_by_name(
        engine: PodmanService, namespaces: EgressNamespaces, opa: ManagedOpa) -> None:
    guard = JovialGuard(opa_url=opa.url, egress=True, netns_prefix=PREFIX, egress_pool=POOL,
                        apparmor_supported=False, deadline=5.0, engine_socket=str(engine.socket_path))
    spawner = _spawner(engine, "alice@uni.edu", ("astro",), Config())
    try:
        plan = await _spawn_and_compare(engine, guard, spawner)
        live = namespaces.user_namespace("alice@uni.edu")
        assert live is not None and live.name == plan.network.name and is_user_netns(live.name)
        assert live.address == spawner.guard_address
        assert "table inet jovial_guard" in namespaces.live_ruleset("alice@uni.edu")
        routes = namespaces.routes(live.name.removeprefix(f"{PREFIX}-u-"))
        assert sorted(line.split()[0] for line in routes.splitlines() if " via " in line) == sorted(
            r.removesuffix("/32") for r in plan.network.routes)
    finally:
        await guard.post_stop(spawner)
        await guard.close()
    assert namespaces.user_namespace("alice@uni.edu") is None
    assert not Path(plan.network.path).exists()


async def test_real_spawn_with_storage_mounts_the_rendered_volume(
        engine: PodmanService, namespaces: EgressNamespaces, opa: ManagedOpa, tmp_path: Path) -> None:
    config = Config({"StorageCredentials": {
        "state_dir": str(tmp_path / "state"), "key_dir": str(tmp_path / "keys"),
        "agent_key_path": str(tmp_path / "agent.key"), "storage_root": str(tmp_path / "lustre"),
        "staging_root": str(tmp_path / "staging"), "work_root": str(tmp_path / "work")}})
    guard = JovialGuard(opa_url=opa.url, egress=True, netns_prefix=PREFIX, egress_pool=POOL,
                        apparmor_supported=False, deadline=5.0, storage_enabled=True,
                        engine_socket=str(engine.socket_path))
    spawner = _spawner(engine, "bob", ("astro",), config)
    try:
        plan = await _spawn_and_compare(engine, guard, spawner)
        assert plan.storage is not None and str(tmp_path / "staging" / "bob") in plan.container.volumes
        assert spawner.guard_record["storage"]["fileset"] == plan.storage.fileset
    finally:
        await guard.post_stop(spawner)
        await guard.close()
        storage = StorageCredentials.instance()
        await storage.close()
        storage.agent.backend.teardown()
        StorageCredentials.clear_instance()
    mounted = subprocess.run(["findmnt", "-rno", "TARGET"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in mounted
