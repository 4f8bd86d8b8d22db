"""The spawn plan: one pure, golden-tested value per decision; one naming of namespaces;
the decision is made on the image the container will really start.

Golden vectors: ``tests/vectors/spawn_plan/<name>.json`` hold the decision's spec, the
render arguments and the expected plan (container settings, namespace routes and nftables
text, storage volume, record). Regenerate with
``python tests/unit/test_spawn_plan.py --regenerate`` and review the diff.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jovial_guard.credentials.backends.bind import staging_volume
from jovial_guard.credentials.hub import StoragePlan
from jovial_guard.decision import Decision, SecuritySpec
from jovial_guard.hardening.egress import EgressNamespaces
from jovial_guard.hardening.netns_names import is_user_netns, namespace_key, user_netns
from jovial_guard.hardening.render_docker import UnrenderableSpec
from jovial_guard.hardening.userns import IdMap
from jovial_guard.policy.opa_process import ManagedOpa
from jovial_guard.runtime.image import NOTEBOOK_IMAGE
from jovial_guard.spawn.guard import JovialGuard, SpawnRefused
from jovial_guard.spawn.network import UserNetworks
from jovial_guard.spawn.plan import SpawnRecord, render_spawn
from jovial_guard.spawn.spawner import GuardedDockerSpawner

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "spawn_plan"
SPEC = Path(__file__).resolve().parents[1] / "vectors" / "render_docker"


def _vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text())


def _render(vector: dict[str, Any]) -> dict[str, Any]:
    spec = SecuritySpec.from_json(vector["spec"])
    decision = Decision(allowed=True, reasons=(), spec=spec, policy_revision="rev-1",
                        decision_id="0" * 32, warnings=("a warning",))
    args = vector["args"]
    userns = IdMap(**args["userns"]) if args.get("userns") else None
    network = None
    if args["egress"]:
        network = UserNetworks(prefix="jg", hub_port=8081).plan(args["user"], spec.egress)
    storage = None
    if spec.storage is not None:
        mount_parent = spec.storage.mount_path.rsplit("/", 1)[0]
        storage = StoragePlan(user=args["user"], uid=spec.uid, gid=spec.gid, fileset=spec.storage.fileset,
                              mode=spec.storage.mode, mount_path=spec.storage.mount_path,
                              volume=staging_volume(Path("/run/jg-staging"), user=args["user"],
                                                    mount_parent=mount_parent),
                              id_map=userns)
    return render_spawn(decision, image=args["image"], seccomp_path="/opt/jg/notebook.json",
                        apparmor_supported=False, network=network, storage=storage,
                        home_volume=args["home_volume"], tmpfs_size="512m", userns=userns).to_json()


@pytest.mark.parametrize("name", sorted(p.stem for p in VECTORS.glob("*.json")))
def test_golden(name: str) -> None:
    vector = _vector(name)
    assert _render(vector) == vector["expected"]


def test_plan_is_deterministic_and_the_record_round_trips() -> None:
    vector = _vector("egress-and-storage")
    first, again = _render(vector), _render(vector)
    assert json.dumps(first) == json.dumps(again)
    record = SpawnRecord.from_json(first["record"])
    assert record.to_json() == first["record"]
    assert record.netns == first["network"]["name"]
    with pytest.raises(ValueError, match="not a spawn record"):
        SpawnRecord.from_json({"profile": "default"})


def test_storage_volume_is_rendered_into_the_container() -> None:
    plan = _render(_vector("egress-and-storage"))
    assert plan["container"]["volumes"]["/run/jg-staging/alice"] == {
        "bind": "/lustre", "mode": "ro", "propagation": "rslave"}
    assert plan["container"]["host_config"]["network_mode"] == f"ns:/run/netns/{plan['network']['name']}"


def test_a_storage_volume_may_not_shadow_home() -> None:
    vector = _vector("egress-and-storage")
    vector["spec"]["storage"]["mount_path"] = "/home/jovyan/data"
    with pytest.raises(UnrenderableSpec, match="free absolute directory"):
        _render(vector)


# -- one naming function -------------------------------------------------------------------

def test_non_trivial_user_names_get_distinct_valid_namespaces() -> None:
    names = ["alice@uni.edu", "aliceunied.u", "Alice@Uni.Edu", "ünïcode", "@@@", "a" * 200]
    keys = [namespace_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    for name in names:
        ns = user_netns("jg", name)
        assert is_user_netns(ns) and len(ns) <= 48
        assert EgressNamespaces("jg").namespace_of(name) == ns
    assert not is_user_netns("jg-egress") and not is_user_netns("jg-s-svc")


def test_the_hook_plans_the_namespace_everyone_else_looks_up() -> None:
    spec = SecuritySpec.from_json(_vector("egress-and-storage")["spec"])
    planned = UserNetworks(prefix="jg", hub_port=8081).plan("alice@uni.edu", spec.egress)
    assert planned.name == user_netns("jg", "alice@uni.edu") == EgressNamespaces("jg").namespace_of("alice@uni.edu")
    assert planned.name.startswith("jg-u-aliceuniedu-")


# -- the decision is on the image that will start ----------------------------------------

def _docker_spawner(name: str, **kwargs: Any) -> GuardedDockerSpawner:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name="astro")], admin=False,
                           url=f"/user/{name}/", id=1, server=None, spawners={})
    spawner = GuardedDockerSpawner(user=user, client_kwargs={"base_url": "unix:///nonexistent"}, **kwargs)
    spawner.log = logging.getLogger("test-spawner")
    return spawner


async def test_decision_is_on_the_allowed_image_the_user_chose(opa: ManagedOpa) -> None:
    guard = JovialGuard(opa_url=opa.url, egress=False, apparmor_supported=False, deadline=5.0)
    spawner = _docker_spawner("alice@uni.edu", allowed_images={
        "notebook": NOTEBOOK_IMAGE, "miner": "docker.io/evil/miner:1.0"})
    spawner.user_options = {"image": "miner"}
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(spawner)
    assert caught.value.rule == "images/not-allowed"
    assert "docker.io/evil/miner:1.0" in str(caught.value)
    assert spawner.guard_hardened is False

    spawner.user_options = {"image": "notebook"}
    record = await guard.pre_spawn(spawner)
    await guard.close()
    assert record["image"] == NOTEBOOK_IMAGE == spawner.guard_image == spawner.image


async def test_an_image_outside_allowed_images_is_refused_before_deciding(opa: ManagedOpa) -> None:
    guard = JovialGuard(opa_url=opa.url, egress=False, apparmor_supported=False, deadline=5.0)
    spawner = _docker_spawner("bob", allowed_images={"notebook": NOTEBOOK_IMAGE})
    spawner.user_options = {"image": "docker.io/evil/miner:1.0"}
    with pytest.raises(SpawnRefused) as caught:
        await guard.pre_spawn(spawner)
    await guard.close()
    assert caught.value.rule == "jovial-guard/image-not-allowed" and caught.value.status_code == 400


async def test_start_refuses_an_image_swapped_after_the_decision(opa: ManagedOpa) -> None:
    guard = JovialGuard(opa_url=opa.url, egress=False, apparmor_supported=False, deadline=5.0)
    choices = {"notebook": NOTEBOOK_IMAGE}
    spawner = _docker_spawner("carol", allowed_images=lambda _spawner: dict(choices))
    spawner.user_options = {"image": "notebook"}
    await guard.pre_spawn(spawner)
    await guard.close()
    choices["notebook"] = "docker.io/evil/miner:1.0"  # allowed_images is a callable: it changed
    with pytest.raises(SpawnRefused) as caught:
        await spawner.start()
    assert caught.value.rule == "jovial-guard/image-changed"
    assert spawner.guard_hardened is False


if __name__ == "__main__" and "--regenerate" in sys.argv:
    for path in sorted(VECTORS.glob("*.json")):
        doc = json.loads(path.read_text())
        doc["expected"] = _render(doc)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path.name}")
