"""One spelling of the profile annotation: the pod a spawn describes reads back, through the
admission normalizer, as the same profile."""

from __future__ import annotations

from jovial_guard.constants import PROFILE_ANNOTATION
from jovial_guard.normalize import workload_from_document
from jovial_guard.spawn.workload import spawn_workload


def test_spawned_pod_carries_the_profile_the_webhook_reads() -> None:
    spawned = spawn_workload(username="alice", groups=("astro",), admin=False,
                             image="localhost/jovial-guard/notebook:v1", profile="large-memory")
    assert spawned.pod["metadata"]["annotations"][PROFILE_ANNOTATION] == "large-memory"
    assert PROFILE_ANNOTATION == "jovial-guard.io/profile"
    doc = {"apiVersion": "v1", "kind": "Pod", **spawned.pod}
    assert workload_from_document(doc).profile == "large-memory"
