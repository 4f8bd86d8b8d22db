"""Learned seccomp profiles: the pure steps, the committed recording and its profile."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jovial_guard.cli import main as cli
from jovial_guard.decision import SecuritySpec
from jovial_guard.hardening.audit_netlink import (
    AUDIT_SECCOMP,
    SECCOMP_RET_LOG,
    AuditReader,
    SyscallNames,
    parse_seccomp,
)
from jovial_guard.hardening.learn import (
    BASELINE,
    LearnError,
    allowed_names,
    build_learned_profile,
    digest,
    learned_profile_path,
    load_json,
    logging_profile,
    profile_stats,
    recording_path,
)
from jovial_guard.hardening.recorder import (
    DEFAULT_SPEC,
    WHEEL_MOUNT,
    WORKLOAD_MOUNT,
    WORKLOADS,
    build_probe_wheel,
    container_kwargs,
)
from jovial_guard.hardening.render_docker import render_docker
from jovial_guard.hardening.seccomp import (
    BASE_PROFILE,
    DENIED,
    notebook_profile_path,
    validate_profile_file,
)

#: A record as this machine's kernel multicasts it (pid, session and comm as seen live).
RECORD = ('audit(1796167526.927:109): auid=0 uid=1000 gid=100 ses=7 subj=unconfined '
          'pid=25225 comm="python3" exe="/usr/bin/python3.11" sig=0 arch=c000003e '
          'syscall=257 compat=0 ip=0x7f58570f34e7 code=0x7ffc0000')

CURRENT: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "defaultErrno": "ENOSYS",
    "archMap": [],
    "syscalls": [
        {"names": ["unshare", "mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [], "comment": "no namespaces", "includes": {}, "excludes": {}},
        {"names": ["read", "write", "openat", "getsid", "exit_group", "rt_sigreturn"],
         "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {},
         "excludes": {}},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
         "comment": "", "includes": {}, "excludes": {}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}],
         "comment": "clone without namespace flags", "includes": {},
         "excludes": {"arches": ["s390", "s390x"]}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "args": [],
         "comment": "ENOSYS", "includes": {}, "excludes": {}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "",
         "includes": {"arches": ["amd64"]}, "excludes": {}},
        {"names": ["sethostname"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "",
         "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
    ],
}


def _recording(names: list[str], **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1, "command": "jovial-guard profile record", "lost": 0,
        "profile": "profiles/seccomp/notebook.json", "profile_sha256": digest(CURRENT),
        "workloads": {"files": {"ok": True, "syscalls": {n: 1 for n in names}}},
        "syscalls": sorted(names),
    }
    doc.update(changes)
    return doc


def test_logging_profile_logs_what_was_allowed_and_keeps_refusals() -> None:
    logged = logging_profile(CURRENT)
    actions = [rule["action"] for rule in logged["syscalls"]]
    assert actions == ["SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_LOG", "SCMP_ACT_LOG",
                       "SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_LOG"]
    assert logged["defaultAction"] == "SCMP_ACT_ERRNO"
    assert logged["syscalls"][3]["args"] == CURRENT["syscalls"][3]["args"]
    assert CURRENT["syscalls"][1]["action"] == "SCMP_ACT_ALLOW", "input must stay untouched"


def test_logging_profile_refuses_a_permissive_base() -> None:
    with pytest.raises(LearnError, match="does not refuse by default"):
        logging_profile(dict(CURRENT, defaultAction="SCMP_ACT_ALLOW"))


def test_learned_profile_allows_only_what_was_recorded() -> None:
    learned = build_learned_profile(CURRENT, _recording(["clone", "openat", "read"]))
    assert learned["defaultAction"] == "SCMP_ACT_ERRNO"
    assert learned["defaultErrnoRet"] == 1
    assert set(allowed_names(learned)) == {"clone", "openat", "read", *(
        set(BASELINE) & set(allowed_names(CURRENT)))}
    assert "write" not in allowed_names(learned) and "getsid" not in allowed_names(learned)
    clone = [r for r in learned["syscalls"] if r["names"] == ["clone"]][0]
    assert clone["args"] == CURRENT["syscalls"][3]["args"], "clone keeps its namespace mask"
    assert allowed_names(learned)["clone"] is True, "clone stays argument-filtered"
    refusals = [r["names"] for r in learned["syscalls"] if r["action"] == "SCMP_ACT_ERRNO"]
    assert ["clone3"] in refusals and ["unshare", "mount"] in refusals
    assert not any(r["names"] == ["personality"] for r in learned["syscalls"])
    assert learned["archMap"] == [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}]
    assert not any("amd64" not in (r["includes"].get("arches") or ["amd64"])
                   for r in learned["syscalls"]), "other architectures' rules are dropped"


def test_learned_profile_keeps_personality_filter_when_recorded() -> None:
    learned = build_learned_profile(CURRENT, _recording(["personality", "read"]))
    rule = [r for r in learned["syscalls"] if r["names"] == ["personality"]][0]
    assert rule["args"] == CURRENT["syscalls"][2]["args"]


@pytest.mark.parametrize("changes, message", [
    ({"lost": 3}, "lost 3 audit records"),
    ({"version": 2}, "version-1"),
    ({"profile_sha256": "0" * 64}, "another notebook profile"),
    ({"syscalls": ["read", "unshare"]}, "refuses: \\['unshare'\\]"),
    ({"syscalls": []}, "non-empty"),
    ({"machine": "s390x"}, "x86_64 only"),
    ({"pids_outside_container_namespace": 1}, "outside the containers"),
    ({"workloads": {"pip_wheel": {"ok": False, "syscalls": {}}}}, "failed while recording"),
])
def test_unusable_recordings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(LearnError, match=message):
        build_learned_profile(CURRENT, _recording(["read"], **changes))


def test_stats_count_arch_and_capabilities() -> None:
    stats = profile_stats(CURRENT)
    # read write openat getsid exit_group rt_sigreturn personality clone arch_prctl
    assert stats["allowed"] == 9
    assert stats["argument_filtered"] == 2
    assert stats["allow_names_any_arch_or_caps"] == 10
    assert stats["refused_by_rule"] == 3


def test_stats_leave_out_other_architectures_names() -> None:
    native = frozenset({"read", "write", "openat", "clone", "personality", "arch_prctl"})
    stats = profile_stats(CURRENT, native=native)
    assert stats["allowed"] == 6 and stats["refused_by_rule"] == 0


def test_parse_seccomp_record() -> None:
    record = parse_seccomp(RECORD)
    assert record is not None
    assert (record.pid, record.session, record.arch, record.syscall) == (25225, 7, 0xC000003E, 257)
    assert record.code == SECCOMP_RET_LOG and record.exe == "/usr/bin/python3.11"
    assert parse_seccomp("audit(1:2): pid=1 ses=x") is None


def _netlink(kind: int, body: str) -> bytes:
    data = body.encode()
    length = 16 + len(data)
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + data + b"\0" * (-length % 4)


def test_reader_keeps_only_its_session_and_logged_calls() -> None:
    """Several messages in one datagram; other sessions, other actions, other types dropped."""
    reader = AuditReader(session=7)
    ours = RECORD
    other_session = RECORD.replace("ses=7", "ses=8")
    refused = RECORD.replace("code=0x7ffc0000", "code=0x50001")
    reader._ingest(_netlink(AUDIT_SECCOMP, ours) + _netlink(1300, "audit(1:1): arch=c000003e")
                   + _netlink(AUDIT_SECCOMP, other_session) + _netlink(AUDIT_SECCOMP, refused)
                   + _netlink(AUDIT_SECCOMP, ours.replace("syscall=257", "syscall=0")))
    records = reader.take()
    assert [r.syscall for r in records] == [257, 0]
    assert reader.foreign == 2
    assert reader.take() == [], "take hands records over once"


def test_syscall_names_come_from_libseccomp() -> None:
    names = SyscallNames()
    assert names.name(0xC000003E, 257) == "openat"
    assert names.number(0xC000003E, "clone3") == 435
    assert names.name(0xC000003E, 99999).startswith("syscall_99999")


def test_probe_wheel_is_a_valid_wheel(tmp_path: Path) -> None:
    wheel = build_probe_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        record = archive.read("jg_learn_probe-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, hashed, size = line.split(",")
            if not hashed:
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert hashed == "sha256=" + expected.decode() and int(size) == len(data)
    assert build_probe_wheel(tmp_path).read_bytes() == wheel.read_bytes(), "deterministic"


def test_recorder_containers_get_the_spawn_hardening(tmp_path: Path) -> None:
    kwargs = container_kwargs(seccomp_path=tmp_path / "p.json", home_volume="home-x",
                              wheel_dir=tmp_path)
    spawn = render_docker(SecuritySpec.from_json(DEFAULT_SPEC),
                          seccomp_path=str(tmp_path / "p.json"), apparmor_supported=False,
                          network_mode="none", home_volume="home-x")
    assert kwargs["host_config"] == spawn["host_config"]
    assert kwargs["user"] == "1000:100"
    extra = {k: v for k, v in kwargs["binds"].items() if k not in spawn["volumes"]}
    assert sorted(v["bind"] for v in extra.values()) == sorted([WHEEL_MOUNT, WORKLOAD_MOUNT])
    assert all(v["mode"] == "ro" for v in extra.values())
    host = spawn["host_config"]
    assert host["read_only"] and host["cap_drop"] == ["ALL"] and host["network_mode"] == "none"
    assert "no-new-privileges" in host["security_opt"]


# --- the committed recording and learned profile ------------------------------------------

@pytest.fixture(scope="module")
def committed() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (load_json(notebook_profile_path(), what="notebook"),
            load_json(recording_path(), what="recording"),
            load_json(learned_profile_path(), what="learned"))


def test_committed_learned_profile_is_built_from_the_committed_recording(committed: Any) -> None:
    result = CliRunner().invoke(cli, ["profile", "build", "--check"])
    assert result.exit_code == 0, result.output
    current, recording, learned = committed
    assert build_learned_profile(current, recording) == learned


def test_committed_recording_covers_every_workload(committed: Any) -> None:
    _, recording, _ = committed
    assert set(recording["workloads"]) == set(WORKLOADS)
    assert all(run["ok"] for run in recording["workloads"].values())
    assert recording["lost"] == 0
    assert recording["command"].startswith("jovial-guard profile record")


def test_committed_learned_profile_is_a_valid_allowlist(committed: Any) -> None:
    current, recording, learned = committed
    validate_profile_file(learned_profile_path())
    allowed = set(allowed_names(learned))
    assert allowed <= set(recording["syscalls"]) | set(BASELINE)
    assert allowed < set(allowed_names(current))
    assert not allowed & DENIED
    clone3 = [r for r in learned["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 and all(r["action"] == "SCMP_ACT_ERRNO" for r in clone3)


def test_stats_command_prints_the_three_profiles_side_by_side() -> None:
    result = CliRunner().invoke(cli, ["profile", "stats", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    stats = doc["profiles"]
    names = ["notebook", "notebook-learned"] + (["engine default"] if BASE_PROFILE.exists() else [])
    assert set(names) <= set(stats)
    assert stats["notebook-learned"]["allowed"] < stats["notebook"]["allowed"]
    if BASE_PROFILE.exists():
        assert stats["notebook"]["allowed"] < stats["engine default"]["allowed"]
    assert doc["chosen_by"] == {"notebook": ["default", "gpu", "large-memory"], "notebook-learned": []}


def test_stats_names_the_notebook_profiles_under_each(tmp_path: Path) -> None:
    data = json.loads((Path(__file__).resolve().parents[2] / "policies" / "data.json").read_text())
    data["settings"]["profiles"]["large-memory"]["seccomp"] = "notebook-learned"
    data["settings"]["profiles"]["gpu"]["seccomp"] = "typo"
    (tmp_path / "data.json").write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["profile", "stats", "--policy-data", str(tmp_path / "data.json")])
    assert result.exit_code == 0, result.output
    assert "    notebook: default\n    notebook-learned: large-memory\n    typo: gpu\n" in result.output
    missing = CliRunner().invoke(cli, ["profile", "stats", "--policy-data", str(tmp_path / "none.json")])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_build_refuses_a_broken_recording(tmp_path: Path) -> None:
    bad = tmp_path / "rec.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(cli, ["profile", "build", "--recording", str(bad),
                                      "--out", str(tmp_path / "o.json"),
                                      "--review", str(tmp_path / "o.diff")])
    assert result.exit_code == 2  # a malformed input, like every CLI mistake
    assert "not readable JSON" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.json").exists()


def test_recording_from_another_profile_is_refused(committed: Any) -> None:
    current, recording, _ = committed
    changed = copy.deepcopy(current)
    changed["syscalls"][0]["comment"] += " changed"
    with pytest.raises(LearnError, match="record again"):
        build_learned_profile(changed, recording)
