"""Attestation: the /proc readers on literal text and on this process, the record ->
expectation, every drift kind, the ruleset digest, the events and the status file, and the
audit service's loop recording checks of a real process through the real service."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.attest.compare import Drift, compare, summary
from jovial_guard.attest.confirm import looking_again
from jovial_guard.attest.expect import ALL_CAPS, RecordUnusable, allowed_caps, cap_bits, from_hardening, from_pod
from jovial_guard.attest.observe import ContainerGone, Observation, observe
from jovial_guard.attest.report import RULE_DRIFT, RULE_OK, RULE_UNCHANGED, attestation_event, intake_event, rule_for
from jovial_guard.attest.status import ServerAttestation, describe, read_status, write_status
from jovial_guard.audit.attest_loop import AttestationLoop, Located
from jovial_guard.audit.events import MalformedEvent
from jovial_guard.audit.query import Query, run_query
from jovial_guard.audit.registry import Owner
from jovial_guard.audit.runner import AuditSettings, RunningAudit
from jovial_guard.hardening.egress_digest import EMPTY_DIGEST, RulesetUnreadable, digest_listing
from jovial_guard.runtime import procfs
from jovial_guard.runtime.procfs import IDENTITY_MAP, CgroupLimits, Mount, ProcessSecurity

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
STATUS = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t0000000000000000
"""
MOUNTINFO = """\
1201 1100 0:52 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u
1202 1201 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1203 1201 0:56 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,size=524288k
1204 1201 0:57 / /home/jovyan rw,relatime - overlay overlay rw
1205 1201 0:58 / /usr\\040local ro - tmpfs tmpfs rw
"""


def record_hardening() -> dict[str, Any]:
    doc = json.loads((VECTORS / "spawn_plan" / "egress-and-storage.json").read_text())
    hardening: dict[str, Any] = doc["expected"]["record"]["hardening"]
    return {**hardening, "ruleset_digest": "v1:sha256:aa"}


def hardened(pid: int = 10, **changes: Any) -> ProcessSecurity:
    fields: dict[str, Any] = dict(pid=pid, name="jupyter-lab", seccomp=2, seccomp_filters=1, no_new_privs=1,
                                  cap_eff=0, cap_prm=0, cap_bnd=0, uid_map=IDENTITY_MAP, gid_map=IDENTITY_MAP)
    fields.update(changes)
    return ProcessSecurity(**fields)


def clean_observation(**changes: Any) -> Observation:
    fields: dict[str, Any] = dict(
        pid=10, processes=(hardened(),), root=Mount("/", frozenset({"ro"})), usr=Mount("/", frozenset({"ro"})),
        limits=CgroupLimits(memory_bytes=2147483648, pids=1024, cpu_quota_us=100000, cpu_period_us=100000),
        ruleset_digest="v1:sha256:aa")
    fields.update(changes)
    return Observation(**fields)


def test_status_and_maps_parse() -> None:
    status = procfs.parse_status(STATUS)
    sec = procfs.security_from(7, status, procfs.parse_id_map("0 100000 65536\n"), IDENTITY_MAP)
    assert (sec.seccomp, sec.seccomp_filters, sec.no_new_privs, sec.cap_eff, sec.name) == (2, 1, 1, 0, "python3")
    assert sec.uid_map == ((0, 100000, 65536),)
    # A field the kernel did not report never reads as hardened.
    assert procfs.security_from(7, {}, IDENTITY_MAP, IDENTITY_MAP).seccomp == -1


def test_mountinfo_finds_the_mount_a_path_lives_on() -> None:
    mounts = procfs.parse_mountinfo(MOUNTINFO)
    root = procfs.mount_at(mounts, "/")
    assert root is not None and root.read_only
    assert procfs.mount_at(mounts, "/usr") == root  # /usr is on the root mount here
    usr_local = procfs.mount_at(mounts, "/usr local/bin")
    assert usr_local is not None and usr_local.point == "/usr local"
    tmp = procfs.mount_at(mounts, "/tmp/x")
    assert tmp is not None and not tmp.read_only


def test_cgroup_v1_and_v2_limits(tmp_path: Path) -> None:
    paths = procfs.parse_cgroup("4:memory:/libpod/abc\n8:pids:/libpod/abc\n1:cpu,cpuacct:/libpod/abc\n")
    assert paths["cpu"] == paths["cpuacct"] == "/libpod/abc"
    for name, value in (("memory/libpod/abc/memory.limit_in_bytes", "2147483648"),
                        ("pids/libpod/abc/pids.max", "1024"), ("cpu/libpod/abc/cpu.cfs_quota_us", "50000"),
                        ("cpu/libpod/abc/cpu.cfs_period_us", "100000")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    limits = procfs.limits_of(paths, root=tmp_path)
    assert (limits.memory_bytes, limits.pids, limits.nano_cpus) == (2147483648, 1024, 500_000_000)
    (tmp_path / "memory/libpod/abc/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "pids/libpod/abc/pids.max").write_text("max\n")
    assert procfs.limits_of(paths, root=tmp_path).memory_bytes is None
    assert procfs.limits_of(paths, root=tmp_path).pids is None
    v2 = tmp_path / "v2"
    (v2 / "user.slice").mkdir(parents=True)
    (v2 / "user.slice" / "memory.max").write_text("1048576\n")
    (v2 / "user.slice" / "cpu.max").write_text("max 100000\n")
    limits = procfs.limits_of(procfs.parse_cgroup("0::/user.slice\n"), root=v2)
    assert (limits.memory_bytes, limits.pids, limits.nano_cpus) == (1048576, None, None)


def test_this_process_is_read_from_proc() -> None:
    assert procfs.start_time(os.getpid()) == procfs.start_time(os.getpid()) is not None
    assert procfs.start_time(2**22 + 1) is None
    me = procfs.read_security(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.seccomp in (0, 1, 2)
    assert os.getpid() in procfs.processes_sharing(os.getpid())
    assert procfs.read_security(2**22 + 1) is None  # beyond pid_max: gone, not an error


def test_capabilities() -> None:
    assert cap_bits(["NET_BIND_SERVICE"]) == 1 << 10
    assert allowed_caps(["ALL"], []) == 0
    assert allowed_caps(["ALL"], ["CAP_NET_BIND_SERVICE"]) == 1 << 10
    assert allowed_caps(["NET_RAW"], []) == ALL_CAPS & ~(1 << 13)
    with pytest.raises(RecordUnusable, match="unknown capability"):
        cap_bits(["FLY"])


def test_record_becomes_expectation() -> None:
    expected = from_hardening(record_hardening())
    assert expected.seccomp and expected.no_new_privs and expected.read_only_root
    assert expected.cap_mask == 0 and expected.uid_map == IDENTITY_MAP
    assert (expected.limits.memory_bytes, expected.limits.pids, expected.limits.nano_cpus) == (2147483648, 1024, 10**9)
    assert expected.netns == "jg-u-alice-2bd806c9" and expected.ruleset_digest == "v1:sha256:aa"
    mapped = from_hardening({**record_hardening(), "user_namespace": {"uid_map": [[0, 200000, 65536]],
                                                                      "gid_map": [[0, 200000, 65536]]}})
    assert mapped.uid_map == ((0, 200000, 65536),)
    # What the embedded spawn records: the engine's "inside:outside:count" notation.
    from jovial_guard.hardening.userns import IdMap

    spawned = from_hardening({**record_hardening(), "user_namespace": {"status": "applied", **IdMap(1000065536).to_json()}})
    assert spawned.uid_map == spawned.gid_map == ((0, 1000065536, 65536),)
    with pytest.raises(RecordUnusable):
        from_hardening({**record_hardening(), "user_namespace": {"uid_map": "0 0 1"}})


def test_a_user_namespace_range_is_checked_when_the_engine_picks_the_map() -> None:
    expected = from_hardening({**record_hardening(), "user_namespace": {"host_range": [200000, 65536]}})
    inside = ((0, 200000, 65536),)
    assert compare(expected, clean_observation(processes=(hardened(uid_map=inside, gid_map=inside),))) == []
    for bad in (IDENTITY_MAP, ((0, 199999, 65536),), ((0, 200000, 65537),)):
        drifts = compare(expected, clean_observation(processes=(hardened(uid_map=bad, gid_map=inside),)))
        assert {d.kind for d in drifts} == {"user_namespace"}, (bad, drifts)
    with pytest.raises(RecordUnusable):
        from_hardening({**record_hardening(), "user_namespace": {"host_range": [0, 10]}})


def test_pod_becomes_expectation() -> None:
    pod = {"spec": {"securityContext": {"seccompProfile": {"type": "Localhost"}}, "hostUsers": False,
                    "containers": [{"name": "notebook", "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "readOnlyRootFilesystem": True,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    expected = from_pod(pod, "notebook")
    assert expected.seccomp and expected.no_new_privs and expected.read_only_root and expected.cap_mask == 0
    assert expected.uid_map is None and expected.limits.memory_bytes == 2**30 and expected.limits.nano_cpus == 5 * 10**8
    with pytest.raises(RecordUnusable):
        from_pod(pod, "sidecar")


def test_clean_container_attests_ok() -> None:
    assert compare(from_hardening(record_hardening()), clean_observation()) == []
    assert summary([]) == "ok"


@pytest.mark.parametrize(("observation", "kind"), [
    (clean_observation(processes=(hardened(), hardened(99, name="sh", seccomp=0, seccomp_filters=0))), "seccomp"),
    (clean_observation(processes=(hardened(no_new_privs=0),)), "no_new_privs"),
    (clean_observation(processes=(hardened(cap_bnd=0x3FFFFFFFFF),)), "capabilities"),
    (clean_observation(processes=(hardened(uid_map=((0, 1000, 1),)),)), "user_namespace"),
    (clean_observation(root=Mount("/", frozenset({"rw"}))), "mount"),
    (clean_observation(limits=CgroupLimits(None, 1024, 100000, 100000)), "limits"),
    (clean_observation(outside_cgroup=(99,)), "limits"),
    (clean_observation(foreign_netns=(99,)), "network"),
    (clean_observation(ruleset_digest=EMPTY_DIGEST), "ruleset"),
    (clean_observation(ruleset_digest=None, ruleset_error="namespace gone"), "ruleset"),
])
def test_each_kind_of_drift(observation: Observation, kind: str) -> None:
    drifts = compare(from_hardening(record_hardening()), observation)
    assert [d.kind for d in drifts] == [kind], drifts
    assert summary(drifts) == f"drift: {kind}"


def test_the_responses_drop_all_is_not_a_drift() -> None:
    seen = clean_observation(ruleset_digest="v1:sha256:cut", network_cut=True)
    assert compare(from_hardening(record_hardening()), seen) == []
    assert summary([], network_cut=True) == "ok (network cut)"
    event = attestation_event(user="alice", server="", drifts=[], previous=None, source="attestation",
                              fields={}, network_cut=True)
    assert event["rule"] == RULE_OK and event["fields"]["status"] == "ok (network cut)"


def test_ruleset_digest_ignores_counters_and_handles() -> None:
    def listing(packets: int, handle: int, port: int) -> str:
        rule = {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": handle,
                         "expr": [{"match": {"left": {"payload": {"field": "dport"}}, "right": port, "op": "=="}},
                                  {"counter": {"packets": packets, "bytes": packets * 60}}, {"accept": None}]}}
        return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, rule]})

    assert digest_listing(listing(0, 4, 443)) == digest_listing(listing(99, 7, 443))
    assert digest_listing(listing(0, 4, 443)) != digest_listing(listing(0, 4, 80))
    assert digest_listing(listing(0, 4, 443)) != EMPTY_DIGEST
    with pytest.raises(RulesetUnreadable):
        digest_listing("table inet t {}")


def test_events_alert_once_per_new_drift() -> None:
    drift = [Drift("ruleset", "changed")]
    assert rule_for([], None) == RULE_OK
    assert rule_for(drift, None) == rule_for(drift, []) == RULE_DRIFT
    assert rule_for(drift, drift) == RULE_UNCHANGED
    event = attestation_event(user="alice", server="", drifts=drift, previous=None, source="attestation",
                              fields={"pid": 1})
    assert event["priority"] == "Critical" and event["user"] == "alice" and event["fields"]["status"] == "drift: ruleset"
    posted = intake_event({"rule": RULE_DRIFT, "pod": "jupyter-alice", "namespace": "hub", "user": "mallory",
                           "labels": {"hub.jupyter.org/username": "alice"},
                           "fields": {"drifts": [{"kind": "seccomp", "detail": "pid 4"}]}})
    assert "user" not in posted and posted["priority"] == "Critical"  # attribution decides the user
    for bad in ([], {"rule": "attestation ok"}, {"rule": "anything", "fields": {"drifts": []}},
                {"rule": RULE_DRIFT, "fields": {"drifts": [{"kind": "weather", "detail": ""}]}}):
        with pytest.raises(MalformedEvent):
            intake_event(bad)


def test_status_file_round_trip(tmp_path: Path) -> None:
    entry = ServerAttestation("alice", "", 100.0, "drift: ruleset", ({"kind": "ruleset", "detail": "flushed"},))
    write_status(tmp_path, [entry], now=100.0)
    assert read_status(tmp_path) == {("alice", ""): entry}
    assert describe(entry, now=104.2) == "attested 4 s ago: drift: ruleset (flushed)"
    assert describe(None, now=0) == "not attested yet"
    (tmp_path / "attestation.json").write_text("{torn")
    assert read_status(tmp_path) == {}


def test_registry_merges_the_hooks_record_with_the_hubs_container_id(tmp_path: Path) -> None:
    from jovial_guard.audit.registry import SpawnRegistry

    registry = SpawnRegistry(tmp_path / "spawns.sqlite")
    registry.register(user="alice", container_name="jupyter-alice", netns="jg-u-alice", record={"hardening": {}})
    registry.register(user="alice", container_id="c" * 64, container_name="jupyter-alice")
    registry.register(user="bob", container_name="jupyter-bob")
    registry.mark_stopped(user="bob")
    (alice,) = registry.running_servers()
    assert (alice.container_id, alice.netns, alice.record) == ("c" * 64, "jg-u-alice", {"hardening": {}})
    registry.close()


async def test_loop_records_every_check_and_alerts_once(tmp_path: Path) -> None:
    """The real service and loop on a real process in namespaces of its own: a pids limit
    its cgroup does not have is a drift, alerted once, then logged as unchanged."""
    running = await RunningAudit(AuditSettings(directory=tmp_path / "audit", port=0, attest_interval=0)).start()
    try:
        hardening = {"seccomp": {"status": "none"}, "capabilities": {"drop": [], "add": []},
                     "read_only_root": False, "no_new_privileges": False, "network_mode": "none",
                     "limits": {"pids": 7}}
        running.registry.register(user="carol", container_name="jupyter-carol", record={"hardening": hardening})
        # A process in pid and mount namespaces of its own: a container as attestation sees one.
        boxed = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "sleep", "60"])
        deadline = time.monotonic() + 10
        while not (children := Path(f"/proc/{boxed.pid}/task/{boxed.pid}/children").read_text().split()):
            assert time.monotonic() < deadline, "unshare did not start its child"
            time.sleep(0.05)
        located = Located(pid=int(children[0]), container_id="d" * 64)
        loop = AttestationLoop(running.service, running.registry, locate=lambda owner: located, interval=1,
                               status_dir=tmp_path / "audit")
        asked: list[Owner] = []
        loop.locate = lambda owner: asked.append(owner) or located
        first = await loop.attest_all()
        second = await loop.attest_all()
        assert len(asked) == 1  # the engine is asked once while the same process runs
        assert [e["rule"] for e in first + second] == [RULE_DRIFT, RULE_UNCHANGED]
        logged = list(run_query(tmp_path / "audit", Query(user="carol", kind="attestation")))
        assert [r["rule"] for r in logged] == [RULE_DRIFT, RULE_UNCHANGED]
        assert logged[0]["attribution"] == "registry" and "pids limit" in logged[0]["summary"]
        assert read_status(tmp_path / "audit")[("carol", "")].status == "drift: limits"
        unlocated = AttestationLoop(running.service, running.registry, locate=lambda owner: None, interval=1)
        assert await unlocated.attest_all() == []  # nothing runs: nothing to attest
        assert Owner(user="x", server="") == Owner(user="x", server="", record={"a": 1})
        assert observe(located.pid).processes[0].pid in (boxed.pid, located.pid)
    finally:
        if "boxed" in locals():
            boxed.kill()
            boxed.wait()
        await running.stop()


def test_node_agent_finds_a_container_by_its_cgroup(tmp_path: Path) -> None:
    from jovial_guard.node.attest import _explain, cgroup_index, container_pid

    cid = "4f" * 32
    for pid, path in ((120, f"/jg-node-x/kubepods/besteffort/podabc/{cid}"), (121, f"/jg-node-x/kubepods/besteffort/podabc/{cid}"),
                      (130, "/jg-node-x/kubepods/besteffort/podabc/other"), (1, "/")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(f"8:pids:{path}\n4:memory:{path}\n")
    (tmp_path / "self").mkdir()
    index = cgroup_index(proc=tmp_path)
    assert container_pid(f"containerd://{cid}", index) == 120
    assert container_pid("containerd://" + "0" * 64, index) is None

    class Forbidden(Exception):
        status = 403

    assert "'list' on pods" in _explain(Forbidden())
    assert "hostPID" in _explain(PermissionError("denied"))


def test_looking_again_compares_a_new_observation_and_says_when_the_container_went() -> None:
    expected = from_hardening(record_hardening())
    intruder = clean_observation(processes=(hardened(), hardened(99, name="sh", seccomp=0, seccomp_filters=0)))
    assert [d.kind for d in looking_again(expected, lambda: intruder)() or []] == ["seccomp"]
    assert looking_again(expected, clean_observation)() == []

    def gone() -> Observation:
        raise ContainerGone("process 10 has exited")

    assert looking_again(expected, gone)() is None
