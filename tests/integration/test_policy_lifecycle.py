"""Policy lifecycle against a real OPA loading signed bundles from the real bundle server."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from jovial_guard.decision import ENGINE_UNAVAILABLE
from jovial_guard.errors import PolicyEngineUnavailable
from jovial_guard.policy.bundle_server import BundleServer
from jovial_guard.policy.bundles import BundleError, build_bundle, opa_bundle_config, verify_bundle
from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.decision_log import DecisionLog
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.lifecycle import DeployRefused, DeployRolledBack, deploy, dry_run, rollback
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa
from jovial_guard.policy.store import PolicyStore, StoreError
from jovial_guard.workload import HubUser, Workload

IMAGE = "localhost/jovial-guard/notebook:v1"


def candidate(tmp_path: Path, name: str, edit: Callable[[Path], None]) -> Path:
    target = tmp_path / name
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    edit(target)
    return target


def edit_data(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = json.loads((root / "data.json").read_text())
        change(data)
        (root / "data.json").write_text(json.dumps(data, indent=2))
    return apply


def spawn_workload(user: str, groups: tuple[str, ...], profile: str | None) -> Workload:
    return Workload(origin="spawn", kind="Pod", name=f"jupyter-{user}", namespace="hub", user=HubUser(user, groups), profile=profile,
                    pod={"metadata": {"labels": {"component": "singleuser-server"}},
                         "spec": {"containers": [{"name": "notebook", "image": IMAGE, "env": [{"name": "API_TOKEN", "value": "s3cret"}]}]}})


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[PolicyStore, ManagedOpa, str]]:
    """A store with the repository's policy active, served to a bundle-mode OPA."""
    store = PolicyStore(tmp_path / "store")
    first = store.add(DEFAULT_POLICY_DIR)
    store.activate(first)
    store.record("deploy", first, previous=None, details={"lint": True, "tests": True})
    with BundleServer(store) as server:
        with ManagedOpa(None, config=opa_bundle_config(service_url=server.url, key=store.key)) as opa:
            yield store, opa, first


def test_bundle_is_signed_with_key_id_and_tampering_is_refused(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "store")
    bundle = tmp_path / "b.tar.gz"
    revision = build_bundle(DEFAULT_POLICY_DIR, bundle, key=store.key)
    verify_bundle(bundle, key=store.key)
    with tarfile.open(bundle) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    signatures = json.loads(members["/.signatures.json"])
    header = json.loads(__import__("base64").urlsafe_b64decode(signatures["signatures"][0].split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    payload = json.loads(__import__("base64").urlsafe_b64decode(signatures["signatures"][0].split(".")[1] + "=="))
    assert payload["keyid"] == store.key.key_id
    assert json.loads(members["/.manifest"])["revision"] == revision

    def repack(name: str, files: dict[str, bytes]) -> Path:
        out = tmp_path / name
        with tarfile.open(out, "w:gz") as tar:
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out

    loosened = dict(members)
    rego = "/pod_security/pod_security.rego"
    loosened[rego] = loosened[rego].replace(b'"NET_BIND_SERVICE"}', b'"NET_BIND_SERVICE", "SYS_ADMIN"}')
    assert loosened[rego] != members[rego]
    with pytest.raises(BundleError, match="failed verification"):
        verify_bundle(repack("tampered.tar.gz", loosened), key=store.key)
    unsigned = {k: v for k, v in members.items() if k != "/.signatures.json"}
    with pytest.raises(BundleError, match="failed verification"):
        verify_bundle(repack("unsigned.tar.gz", unsigned), key=store.key)
    other = PolicyStore(tmp_path / "other-store")
    with pytest.raises(BundleError, match="failed verification"):
        verify_bundle(bundle, key=other.key)


def test_opa_refuses_a_tampered_bundle_it_is_served(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "store")
    revision = store.add(DEFAULT_POLICY_DIR)
    store.activate(revision)
    # Tamper with the stored bundle after activation: OPA itself must refuse it.
    path = store.bundle_path(revision)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    tampered = members["/data.json"].replace(b'"allow_latest":false', b'"allow_latest":true')
    assert tampered != members["/data.json"]
    members["/data.json"] = tampered
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with BundleServer(store) as server:
        with pytest.raises(PolicyEngineUnavailable, match="did not become ready"):
            ManagedOpa(None, config=opa_bundle_config(service_url=server.url, key=store.key), ready_timeout=4).start()
    with pytest.raises(BundleError):
        store.activate(revision)


async def test_deploy_switches_atomically_without_failed_requests(live: tuple[PolicyStore, ManagedOpa, str], tmp_path: Path) -> None:
    store, opa, first = live
    endpoint = OpaEndpoint(opa.url)
    wider = candidate(tmp_path, "wider", edit_data(lambda d: d["settings"]["profiles"]["large-memory"]["groups"].append("observers")))
    astro = spawn_workload("carol", ("observers",), "large-memory")
    outcomes: list[tuple[bool, str, str]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        # A generous deadline: the deploy runs `opa test` on the same two cores, and this
        # test is about the switch, not about OPA's latency under that load.
        async with OpaConnection(endpoint, timeout=10.0) as conn:
            engine = PolicyEngine(conn, deadline=10.0)
            while not stop.is_set():
                d = await engine.decide(astro)
                outcomes.append((d.allowed, d.policy_revision, d.reasons[0].rule if d.reasons else ""))

    task = asyncio.ensure_future(traffic())
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        revision = await deploy(store, wider, endpoint=endpoint, say=lambda _: None)
        switched = time.monotonic() - started
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
    assert store.current() == revision != first
    # Before: denied by the profile rule under the first revision; after: allowed under
    # the new one; never an engine failure, never a decision from an unknown revision.
    assert {rule for _, _, rule in outcomes} <= {"profiles/not-allowed", ""}
    assert ENGINE_UNAVAILABLE not in {rule for _, _, rule in outcomes}
    for allowed, rev, _ in outcomes:
        assert (rev, allowed) in {(first, False), (revision, True)}
    assert outcomes[0][1] == first and outcomes[-1] == (True, revision, "")
    entry = store.history()[-1]
    assert entry.action == "deploy" and entry.details["tests"] is True and entry.details["switch_seconds"] < 5
    print(f"deploy took {switched:.2f}s in all; OPA switched in {entry.details['switch_seconds']}s; {len(outcomes)} decisions during the switch")


async def test_deploy_with_failing_tests_changes_nothing(live: tuple[PolicyStore, ManagedOpa, str], tmp_path: Path) -> None:
    store, opa, first = live

    def break_rule(root: Path) -> None:
        rego = root / "pod_security" / "pod_security.rego"
        rego.write_text(rego.read_text().replace('"NET_BIND_SERVICE"}', '"NET_BIND_SERVICE", "SYS_ADMIN"}'))

    bad = candidate(tmp_path, "bad", break_rule)
    with pytest.raises(DeployRefused, match="tests"):
        await deploy(store, bad, endpoint=OpaEndpoint(opa.url), say=lambda _: None)
    assert store.current() == first
    async with OpaConnection(OpaEndpoint(opa.url)) as conn:
        assert await conn.get_data("jovial_guard_meta/revision") == first
    assert store.history()[-1].action == "refused"


async def test_deploy_failing_health_probe_rolls_back(live: tuple[PolicyStore, ManagedOpa, str], tmp_path: Path) -> None:
    store, opa, first = live

    def open_everything(root: Path) -> None:
        # Passes lint and its own (edited) tests, but lets privileged pods through.
        main = (root / "main.rego").read_text()
        opened = main.replace("(pod_security.violation | images.violation)", "images.violation")
        assert opened != main
        (root / "main.rego").write_text(opened)
        test = root / "main_test.rego"
        text = test.read_text()
        start = text.index("test_dangerous_pod_denied_with_reasons")
        end = text.index("test_revision_from_data")
        test.write_text(text[:start] + text[end:])

    open_pol = candidate(tmp_path, "open", open_everything)
    with pytest.raises(DeployRolledBack, match="known-bad privileged pod was allowed"):
        await deploy(store, open_pol, endpoint=OpaEndpoint(opa.url), say=lambda _: None, min_coverage=0)
    assert store.current() == first
    async with OpaConnection(OpaEndpoint(opa.url)) as conn:
        assert await conn.get_data("jovial_guard_meta/revision") == first
    assert store.history()[-1].action == "auto-rollback"


async def test_rollback_and_diff_and_history(live: tuple[PolicyStore, ManagedOpa, str], tmp_path: Path) -> None:
    store, opa, first = live
    endpoint = OpaEndpoint(opa.url)
    newer = candidate(tmp_path, "newer", edit_data(lambda d: d["settings"]["images"]["allowed_prefixes"].append("ghcr.io/astro/")))
    second = await deploy(store, newer, endpoint=endpoint, say=lambda _: None)
    diff = "".join(store.diff(first, second))
    assert '+        "ghcr.io/astro/"' in diff or "ghcr.io/astro/" in diff
    assert await rollback(store, endpoint=endpoint, say=lambda _: None) == first
    async with OpaConnection(endpoint) as conn:
        assert await conn.get_data("jovial_guard_meta/revision") == first
    assert [e.action for e in store.history()] == ["deploy", "deploy", "rollback"]
    # The history is append-only and hash-chained: an edit is detected.
    lines = store.history_path.read_text().splitlines()
    lines[1] = lines[1].replace('"deploy"', '"rollback"', 1)
    store.history_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match="line 2"):
        store.history()


async def test_dry_run_finds_exactly_the_users_whose_outcome_changes(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    users = {
        "ann": (("staff",), "large-memory"),      # loses large-memory in the candidate
        "ben": (("large-memory",), "large-memory"),  # keeps it
        "cal": (("astro",), "large-memory"),      # denied before and after
        "dee": (("astro",), None),                # default profile, unaffected
        "eve": (("gpu-users",), "gpu"),           # gains nothing, loses nothing
        "fay": ((), "gpu"),                       # gains gpu in the candidate
    }
    with ManagedOpa(DEFAULT_POLICY_DIR) as opa:
        async with OpaConnection(OpaEndpoint(opa.url)) as conn:
            engine = PolicyEngine(conn, listeners=[log])
            for name, (groups, profile) in users.items():
                await engine.decide(spawn_workload(name, groups, profile))
                await engine.decide(spawn_workload(name, groups, profile))  # duplicates count once

    def change(d: dict[str, Any]) -> None:
        d["settings"]["profiles"]["large-memory"]["groups"] = ["large-memory"]
        d["settings"]["profiles"]["gpu"]["groups"] = ["*"]
        d["settings"]["resources"]["group_max"]["*"]["gpu"] = 1

    cand = candidate(tmp_path, "cand", edit_data(change))
    report = await dry_run(log.records(), baseline=DEFAULT_POLICY_DIR, candidate=cand)
    assert report.inputs == 6 and report.errors == 0
    assert {c.user for c in report.newly_denied} == {"ann"}
    assert {c.user for c in report.newly_allowed} == {"fay"}
    [ann] = report.newly_denied
    assert ann.reasons_after[0]["rule"] == "profiles/not-allowed"
    # Secrets never reach the log, and the masked input still replays.
    text = (tmp_path / "decisions.jsonl").read_text()
    assert "s3cret" not in text and "***" in text
