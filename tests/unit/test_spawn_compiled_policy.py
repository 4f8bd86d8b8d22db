"""The pre-spawn hook deciding with OPA's compiled policy in the hub (``policy_engine = "wasm"``).

The bundle comes from a real policy store through the bundle service the embedded stack
runs; the hub must decide as OPA does, refuse every spawn until it holds a verified bundle,
keep its revision when a bundle fails verification, follow a deploy, and tell the bundle
service which revision it decides with (what ``jovial-guard policy deploy`` waits for).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.policy.bundle_server import BundleServer
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR
from jovial_guard.policy.replicas import replica_states, wait_workers
from jovial_guard.policy.store import PolicyStore
from jovial_guard.spawn.guard import HUB_WORKER_ID, JovialGuard, SpawnRefused, StartupRefused

from .test_spawn_hook import _spawner


def _large_memory_for(tmp_path: Path, group: str) -> Path:
    """The shipped policies with the large-memory profile opened to ``group``."""
    candidate = tmp_path / f"policies-{group}"
    shutil.copytree(DEFAULT_POLICY_DIR, candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["settings"]["profiles"]["large-memory"]["groups"].append(group)
    (candidate / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    return candidate


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PolicyStore, BundleServer]]:
    store = PolicyStore(tmp_path_factory.mktemp("store") / "policy-store")
    store.activate(store.add(DEFAULT_POLICY_DIR))
    with BundleServer(store) as server:
        yield store, server


def _guard(store: PolicyStore, bundle_url: str, **kwargs: Any) -> JovialGuard:
    return JovialGuard(policy_engine="wasm", policy_bundle_url=bundle_url,
                       policy_bundle_public_key=str(store.key.public_path),
                       policy_bundle_key_id=store.key.key_id, policy_bundle_poll=0.2,
                       egress=False, apparmor_supported=False, deadline=5.0, **kwargs)


def _bundle_url(server: BundleServer) -> str:
    return f"{server.url}/bundles/jovial_guard.tar.gz"


async def test_the_hub_decides_with_the_bundle_and_reports_its_revision(
        served: tuple[PolicyStore, BundleServer]) -> None:
    store, server = served
    guard = _guard(store, _bundle_url(server))
    try:
        spawner = _spawner("alice", ("astro", "large-memory"), "large-memory")
        record = await guard.pre_spawn(spawner)
        assert spawner.guard_hardened is True
        assert spawner.extra_host_config["read_only"] is True
        assert record["policy_revision"] == store.current()

        with pytest.raises(SpawnRefused) as caught:
            await guard.pre_spawn(_spawner("bob", ("astro",), "large-memory"))
        assert caught.value.rule == "profiles/not-allowed"
        assert "you are in astro" in caught.value.jupyterhub_message

        hub = [s for s in await replica_states(server.url) if s["id"] == HUB_WORKER_ID]
        assert [(s["revision"], s["error"]) for s in hub] == [(store.current(), "")]
        assert await wait_workers(server.url, str(store.current()), timeout=1) >= 0
    finally:
        await guard.close()


async def test_a_deploy_reaches_the_hub_and_the_wait_sees_it(
        served: tuple[PolicyStore, BundleServer], tmp_path: Path) -> None:
    store, server = served
    guard = _guard(store, _bundle_url(server))
    previous = store.current()
    try:
        with pytest.raises(SpawnRefused):
            await guard.pre_spawn(_spawner("carol", ("astro",), "large-memory"))
        revision = store.add(_large_memory_for(tmp_path, "astro"))
        store.activate(revision)
        # The hub is behind until its next look at the bundle service: the wait names it.
        with pytest.raises(PolicyEngineUnavailable, match=f"{HUB_WORKER_ID}: {previous}"):
            await wait_workers(server.url, revision, timeout=0.0)
        assert await wait_workers(server.url, revision, timeout=20) > 0
        record = await guard.pre_spawn(_spawner("carol", ("astro",), "large-memory"))
        assert record["policy_revision"] == revision and record["profile"] == "large-memory"
    finally:
        store.activate(str(previous))
        await wait_workers(server.url, str(previous), timeout=20)
        await guard.close()


async def test_no_verified_bundle_refuses_every_spawn(
        served: tuple[PolicyStore, BundleServer], tmp_path: Path) -> None:
    store, _ = served
    # A bundle signed by another store's key under the same key id: a relaxed policy an
    # attacker could publish. The hub never decides with it.
    other = PolicyStore(tmp_path / "other-store")
    relaxed = other.add(_large_memory_for(tmp_path, "astro"))
    for source in (str(other.bundle_path(relaxed)), str(tmp_path / "missing.tar.gz")):
        guard = _guard(store, source)
        try:
            spawner = _spawner("dave", ("astro",), "large-memory")
            with pytest.raises(SpawnRefused) as caught:
                await guard.pre_spawn(spawner)
            assert caught.value.rule == "policy-engine-unavailable"
            assert caught.value.status_code == 503
            assert spawner.guard_hardened is False
            # What the user reads is plain: no address, no exception name.
            text = caught.value.jupyterhub_message
            assert "the policy service is restarting, try again in a minute" in text, text
            assert "127.0.0.1" not in text and "Error" not in text and "Traceback" not in text, text
        finally:
            await guard.close()


async def test_a_refused_bundle_leaves_the_verified_revision_deciding(
        served: tuple[PolicyStore, BundleServer], tmp_path: Path) -> None:
    store, _ = served
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(store.bundle_path(str(store.current())).read_bytes())
    guard = _guard(store, str(bundle))
    try:
        await guard.pre_spawn(_spawner("erin", ("astro",)))
        other = PolicyStore(tmp_path / "other-store")
        bundle.write_bytes(other.bundle_path(other.add(_large_memory_for(tmp_path, "astro"))).read_bytes())
        await asyncio.sleep(1.0)  # five looks at the file
        with pytest.raises(SpawnRefused) as caught:
            await guard.pre_spawn(_spawner("erin", ("astro",), "large-memory"))
        assert caught.value.rule == "profiles/not-allowed"
    finally:
        await guard.close()


def test_startup_names_what_the_compiled_policy_lacks(tmp_path: Path) -> None:
    guard = JovialGuard(policy_engine="wasm", egress=False, engine_socket=str(tmp_path / "x"))
    with pytest.raises(StartupRefused, match="policy_bundle_url and c.JovialGuard.policy_bundle_public_key and "
                                             "c.JovialGuard.policy_bundle_key_id not set"):
        guard.check_startup()
    guard = JovialGuard(policy_engine="wasm", policy_bundle_url="http://127.0.0.1:9/bundles/jovial_guard.tar.gz",
                        policy_bundle_public_key=str(tmp_path / "no.pem"), policy_bundle_key_id="k",
                        egress=False, engine_socket=str(tmp_path / "x"))
    with pytest.raises(StartupRefused, match="no.pem is missing"):
        guard.check_startup()
    with pytest.raises(Exception, match="policy_engine"):
        JovialGuard(policy_engine="rego-in-python")
