"""The whole red-team suite again, with the learned seccomp profile chosen in policy data.

A copy of the policies whose ``data.json`` names ``notebook-learned`` for every notebook
profile is deployed to the hub's policy store, the admins' way of choosing it (the hub and
OPA waited for). Every attack and every piece of real work in ``test_redteam`` must give the
same answer under the learned allowlist. Then the refusals themselves: syscalls no recorded
workload made fail with EPERM inside the user's server and land in the hub's tamper-evident
audit log, attributed to the user, through the audit service's seccomp agent. The recorded
workloads (except the server, which is the running server itself, and pip, whose wheel is
mounted only by the recorder) run inside the user's server too. Afterwards the previous
revision is active again.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.audit.query import Query, run_query
from jovial_guard.hardening.recorder import WORKLOAD_DIR
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

from .conftest import EmbeddedHub
from .test_redteam import *  # noqa: F403 - the same attacks, collected again in this module
from .test_redteam import probe

LEARNED = "jovial-guard/notebook-learned.json"
#: Allowed by notebook.json, never made by a recorded workload: refused by the learned one.
OUTSIDE_RECORDING = {"memfd_create": 319, "sched_yield": 24}


@pytest.fixture(scope="module")
def learned_policy(embedded_hub: EmbeddedHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    policies = tmp_path_factory.mktemp("learned") / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, policies)
    data = json.loads((policies / "data.json").read_text())
    for profile in data["settings"]["profiles"].values():
        profile["seccomp"] = "notebook-learned"
    (policies / "data.json").write_text(json.dumps(data, indent=2) + "\n")
    previous = embedded_hub.policy_revision()
    for user in sorted(embedded_hub.users):  # servers started under the other profile
        embedded_hub.stop(user)
    embedded_hub.deploy_policy(policies)
    try:
        yield policies
    finally:
        for user in sorted(embedded_hub.users):
            embedded_hub.stop(user)
        embedded_hub.activate_policy(previous)


@pytest.fixture(scope="module")
def alice(embedded_hub: EmbeddedHub, learned_policy: Path) -> str:
    embedded_hub.spawn("alice", "default", groups=("astro", "large-memory"))
    return "alice"


@pytest.fixture(scope="module")
def bob(embedded_hub: EmbeddedHub, learned_policy: Path) -> str:
    embedded_hub.spawn("bob", "default", groups=("astro",))
    return "bob"


def test_learned_profile_is_what_the_container_runs(embedded_hub: EmbeddedHub, alice: str) -> None:
    decision = [d for d in embedded_hub.decisions() if d["user"] == alice][-1]
    assert decision["allowed"] is True
    assert decision["policy_revision"] == embedded_hub.policy_revision()
    options = embedded_hub.container(alice).attrs["HostConfig"]["SecurityOpt"]
    seccomp = [o for o in options if o.startswith("seccomp=")]
    assert len(seccomp) == 1 and Path(seccomp[0].split("=", 1)[1]).name.startswith("notebook-learned-"), options
    audited = json.loads(Path(seccomp[0].split("=", 1)[1]).read_text())
    assert audited["listenerMetadata"] == LEARNED
    assert audited["defaultAction"] == "SCMP_ACT_ERRNO" and audited["defaultErrnoRet"] == 1


def test_syscall_outside_the_recording_is_eperm_and_audited(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, f"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
out = {{}}
for name, nr in {OUTSIDE_RECORDING!r}.items():
    ctypes.set_errno(0)
    rc = libc.syscall(nr, b"x", 0) if name == "memfd_create" else libc.syscall(nr)
    out[name] = [rc, ctypes.get_errno()]
for _ in range(50):  # repeats are counted, not logged one by one
    libc.syscall(24)
print(json.dumps(out))
""")
    for name in OUTSIDE_RECORDING:
        assert result[name] == [-1, errno.EPERM], result
    audit_dir = embedded_hub.state_dir / "audit"
    cid = embedded_hub.container(alice).id

    def refusals() -> list[dict[str, Any]]:
        return [r for r in run_query(audit_dir, Query(user=alice, kind="seccomp"))
                if r["rule"] == "syscall refused by seccomp profile" and r["container_id"] == cid]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = refusals()
        firsts = {r["fields"]["syscall"]: r for r in found if r["fields"]["first"]}
        repeated = sum(r["fields"]["count"] for r in found
                       if not r["fields"]["first"] and r["fields"]["syscall"] == "sched_yield")
        if set(OUTSIDE_RECORDING) <= set(firsts) and repeated >= 50:
            break
        time.sleep(0.5)
    assert set(OUTSIDE_RECORDING) <= set(firsts), found
    assert repeated == 50, found
    first = firsts["memfd_create"]
    assert first["attribution"] == "registry" and first["user"] == alice
    assert first["fields"]["profile"] == LEARNED and first["fields"]["errno"] == "EPERM"
    assert first["fields"]["comm"] == "python3"
    assert first["priority"] == "Warning"
    attached = list(run_query(audit_dir, Query(user=alice, kind="seccomp", rule="seccomp refusals audited")))
    assert any(r["container_id"] == cid for r in attached)
    verify = subprocess.run([sys.executable, "-m", "jovial_guard", "audit", "verify", "--dir", str(audit_dir)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("workload", ["kernel", "scientific", "files", "processes", "threads"])
def test_recorded_workload_passes_in_the_users_server(embedded_hub: EmbeddedHub, alice: str,
                                                      workload: str) -> None:
    source = (WORKLOAD_DIR / f"{workload}.py").read_text()
    script = f"/tmp/jg-workload-{workload}.py"  # a file: multiprocessing's spawn re-imports it
    rc, out = embedded_hub.exec(alice, ["python3", "-c", f"open({script!r}, 'w').write({source!r})"])
    assert rc == 0, out
    rc, out = embedded_hub.exec(alice, ["python3", script], timeout=300)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    assert rc == 0 and lines, out[-2000:]
    assert json.loads(lines[-1]).get("ok") is True, out[-2000:]
