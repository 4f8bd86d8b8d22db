"""The storage grant comes from OPA (policies/storage/storage.rego), asked through the real server."""

from __future__ import annotations

import pytest

from jovial_guard.credentials.errors import StoragePolicyError
from jovial_guard.credentials.policy import StorageParams, storage_grant_for
from jovial_guard.policy.client import OpaConnection
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.workload import HubUser, Workload


def _workload(name: str, groups: tuple[str, ...] = ()) -> Workload:
    return Workload(
        origin="spawn",
        kind="Pod",
        name=f"jupyter-{name}",
        namespace="jhub",
        pod={
            "metadata": {"name": f"jupyter-{name}"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True},
                "containers": [{"name": "notebook", "image": "localhost/jovial-guard/notebook:1"}],
            },
        },
        user=HubUser(name=name, groups=groups),
    )


async def test_user_gets_own_home(opa_connection: OpaConnection) -> None:
    params = await storage_grant_for(opa_connection, _workload("alice"))
    assert params == StorageParams(fileset="home/alice", mode="rw", mount_path="/lustre/home")


async def test_group_member_gets_project_read_only(opa_connection: OpaConnection) -> None:
    params = await storage_grant_for(opa_connection, _workload("bob", ("astro",)))
    assert params == StorageParams(fileset="projects/astro", mode="ro", mount_path="/lustre/project")


async def test_unsafe_user_gets_no_storage(opa_connection: OpaConnection) -> None:
    assert await storage_grant_for(opa_connection, _workload("../root")) is None


async def test_decision_spec_carries_the_same_grant(engine: PolicyEngine) -> None:
    decision = await engine.decide(_workload("alice"))
    assert decision.spec is not None and decision.spec.storage is not None
    assert (decision.spec.storage.fileset, decision.spec.storage.mode, decision.spec.storage.mount_path) == (
        "home/alice",
        "rw",
        "/lustre/home",
    )


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"fileset": "../x", "mode": "rw", "mount_path": "/l/h"},
        {"fileset": "home/a", "mode": "admin", "mount_path": "/l/h"},
        {"fileset": "home/a", "mode": "rw"},
    ],
)
def test_malformed_answer_refused(doc: object) -> None:
    with pytest.raises(StoragePolicyError):
        StorageParams.from_json(doc)
