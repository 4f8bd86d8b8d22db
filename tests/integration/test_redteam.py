"""Red team: a real user's server, spawned through the Hub REST API, attacks its sandbox.

Each attack runs as the notebook user inside the container the hook hardened and asserts
the kernel's answer (errno or outcome). Benign work (numpy/astropy, writing home and /tmp,
the allowlisted archive) must keep working, and the hub and other users stay healthy.
Network tests only talk to test hosts in namespaces made here (behind the project's egress
router) or to loopback: never to a real metadata service or anything off this machine.
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import time
from typing import Any, Iterator

import pytest
import requests

from jovial_guard.hardening.egress import ServiceHandle
from jovial_guard.runtime import procfs
from jovial_guard.spawn.network import namespace_key

from .conftest import HOME_VOLUME, NETNS_PREFIX, EmbeddedHub, SpawnFailed

pytestmark = pytest.mark.integration

ARCHIVE = "10.213.250.10"  # inside the astro group's allowlist (10.213.250.0/24, 80/443)
OTHER_HOST = "10.213.251.10"  # private range, allowlisted for nobody
METADATA = "169.254.169.254"  # a stand-in, reachable only inside the project's router ns


def probe(hub: EmbeddedHub, user: str, code: str, timeout: float = 120) -> dict[str, Any]:
    """Run Python ``code`` in the user's container; it must print one JSON line last."""
    rc, out = hub.exec(user, ["python3", "-c", code], timeout=timeout)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"probe printed no JSON (rc={rc}):\n{out}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["_rc"] = rc
    return result


ERRNO_OF = """
import json, os, errno, ctypes, socket
def attempt(fn):
    try:
        fn()
        return {"errno": 0}
    except OSError as exc:
        return {"errno": exc.errno, "error": str(exc)}
"""


@pytest.fixture(scope="module")
def alice(embedded_hub: EmbeddedHub) -> str:
    embedded_hub.spawn("alice", "default", groups=("astro", "large-memory"))
    return "alice"


@pytest.fixture(scope="module")
def bob(embedded_hub: EmbeddedHub) -> str:
    embedded_hub.spawn("bob", "default", groups=("astro",))
    return "bob"


@pytest.fixture(scope="module")
def test_hosts(embedded_hub: EmbeddedHub) -> Iterator[dict[str, ServiceHandle]]:
    """HTTP test hosts in service namespaces behind the router (not reachable from the host)."""
    hosts: dict[str, ServiceHandle] = {}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for name, address in (("archive", ARCHIVE), ("other", OTHER_HOST), ("meta", METADATA)):
            handle = embedded_hub.egress.attach_service(name, address)
            hosts[name] = handle
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", handle.name, "python3", "-m", "http.server", "80",
                 "--bind", address, "--directory", "/usr/share/doc/nftables"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for name, handle in hosts.items():
            _wait_listening(handle.name, handle.address, 80)
        yield hosts
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
        for name in hosts:
            embedded_hub.egress.destroy_service(name)


def _wait_listening(ns: str, address: str, port: int, timeout: float = 20) -> None:
    code = f"import socket; socket.create_connection(('{address}', {port}), timeout=1).close()"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code],
                          capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"test host {address}:{port} in {ns} did not come up")


def _router_can_reach(hub: EmbeddedHub, address: str) -> bool:
    """The test host is really up: the router namespace itself reaches it."""
    code = f"import socket; socket.create_connection(('{address}', 80), timeout=3).close()"
    return subprocess.run(["ip", "netns", "exec", hub.egress.router, "python3", "-c", code],
                          capture_output=True, check=False).returncode == 0


# -- the container is what the decision said ------------------------------------------------

def test_container_is_hardened(embedded_hub: EmbeddedHub, alice: str) -> None:
    attrs = embedded_hub.container(alice).attrs
    hc = attrs["HostConfig"]
    assert hc["ReadonlyRootfs"] is True
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["PidsLimit"] == 1024
    assert hc["Memory"] == 2 * 2**30
    assert hc["NanoCpus"] == 10**9
    assert hc["NetworkMode"].startswith(f"ns:/run/netns/{NETNS_PREFIX}-u-alice-")
    assert attrs["Config"]["User"] == "1000:100"
    status = probe(embedded_hub, alice, """
import json
s = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
print(json.dumps({k: s[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp", "Uid")}))
""")
    assert status["CapEff"] == "0000000000000000"
    assert status["CapPrm"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert status["Uid"].split()[0] == "1000"
    # The host's view of the same container (the reader live attestation uses) agrees.
    host = procfs.read_security(int(attrs["State"]["Pid"]))
    assert host is not None
    assert (host.seccomp, host.no_new_privs, host.cap_eff, host.cap_prm, host.cap_bnd) == (
        2, 1, int(status["CapEff"], 16), int(status["CapPrm"], 16), int(status["CapBnd"], 16))


def test_apparmor_recorded_not_faked(embedded_hub: EmbeddedHub, alice: str) -> None:
    hc = embedded_hub.container(alice).attrs["HostConfig"]
    from jovial_guard.hardening.apparmor import host_supports_apparmor

    if not host_supports_apparmor().supported:
        assert not any(o.startswith("apparmor=") for o in hc["SecurityOpt"])
        log = (embedded_hub.state_dir / "jupyterhub.log").read_text(errors="replace")
        assert re.search(r"jovial_guard: admitted alice .*apparmor=unsupported", log)


def test_decisions_are_logged_with_revision(embedded_hub: EmbeddedHub, alice: str) -> None:
    mine = [d for d in embedded_hub.decisions() if d["user"] == alice]
    assert mine and mine[-1]["allowed"] is True
    assert mine[-1]["policy_revision"] == embedded_hub.policy_revision()


# -- file system --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/usr/evil", "/evil", "/etc/passwd-new", "/opt/notebook/evil"])
def test_root_filesystem_is_read_only(embedded_hub: EmbeddedHub, alice: str, path: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + f"""
print(json.dumps(attempt(lambda: open({path!r}, "w").write("x"))))
""")
    assert result["errno"] == errno.EROFS, result


def test_home_and_tmp_are_writable(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, """
import json, os
for p in ("/home/jovyan/work.txt", "/tmp/scratch.txt"):
    open(p, "w").write("data")
st = os.stat("/home/jovyan")
print(json.dumps({"home_uid": st.st_uid, "home": open("/home/jovyan/work.txt").read(),
                  "tmp": open("/tmp/scratch.txt").read()}))
""")
    assert result == {"home_uid": 1000, "home": "data", "tmp": "data", "_rc": 0}


def test_other_users_home_is_out_of_reach(embedded_hub: EmbeddedHub, alice: str, bob: str) -> None:
    rc, _ = embedded_hub.exec(bob, ["sh", "-c", "echo bob-secret > /home/jovyan/secret.txt"])
    assert rc == 0
    volume = embedded_hub.docker.volumes.get(HOME_VOLUME.format(username="bob"))
    host_path = volume.attrs["Mountpoint"] + "/secret.txt"
    result = probe(embedded_hub, alice, ERRNO_OF + f"""
print(json.dumps({{"by_host_path": attempt(lambda: open({host_path!r}).read()),
                  "homes": sorted(os.listdir("/home")),
                  "mine": os.path.exists("/home/jovyan/secret.txt")}}))
""")
    # The host path does not exist in alice's mount namespace: ENOENT, or EACCES where a
    # prefix of it (the image's own /root, mode 0700) happens to exist.
    assert result["by_host_path"]["errno"] in (errno.ENOENT, errno.EACCES), result
    assert result["homes"] == ["jovyan"]
    assert result["mine"] is False


# -- kernel surfaces (seccomp, capabilities, no-new-privileges) -------------------------------------

def test_mount_is_denied(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + """
libc = ctypes.CDLL(None, use_errno=True)
def m():
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
print(json.dumps(attempt(m)))
""")
    assert result["errno"] == errno.EPERM, result


def test_unshare_user_namespace_is_denied(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + """
libc = ctypes.CDLL(None, use_errno=True)
def u(flags):
    def call():
        if libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
    return call
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
print(json.dumps({"user": attempt(u(CLONE_NEWUSER)), "mount": attempt(u(CLONE_NEWNS)),
                  "net": attempt(u(CLONE_NEWNET))}))
""")
    assert result["user"]["errno"] == errno.EPERM, result
    assert result["mount"]["errno"] == errno.EPERM, result
    assert result["net"]["errno"] == errno.EPERM, result


def test_keyctl_is_denied(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + """
libc = ctypes.CDLL(None, use_errno=True)
SYS_keyctl, SYS_add_key = 250, 248  # x86_64
def k():
    if libc.syscall(SYS_keyctl, 0, -3, 0, 0, 0) < 0:  # KEYCTL_GET_KEYRING_ID, session keyring
        raise OSError(ctypes.get_errno(), "keyctl")
def a():
    if libc.syscall(SYS_add_key, b"user", b"x", b"v", 1, -3) < 0:
        raise OSError(ctypes.get_errno(), "add_key")
print(json.dumps({"keyctl": attempt(k), "add_key": attempt(a)}))
""")
    assert result["keyctl"]["errno"] == errno.EPERM, result
    assert result["add_key"]["errno"] == errno.EPERM, result


def test_ptrace_of_another_process_is_denied(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + """
import subprocess
libc = ctypes.CDLL(None, use_errno=True)
victim = subprocess.Popen(["sleep", "30"])
def p():
    if libc.ptrace(16, victim.pid, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
out = attempt(p)
victim.kill()
print(json.dumps(out))
""")
    assert result["errno"] == errno.EPERM, result


def test_raw_socket_is_denied(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, ERRNO_OF + """
print(json.dumps(attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))))
""")
    assert result["errno"] == errno.EPERM, result


def test_no_setuid_binaries_and_no_way_to_root(embedded_hub: EmbeddedHub, alice: str) -> None:
    # Unreadable directories (/root, /etc/ssl/private) are skipped: the user cannot run
    # what it cannot reach either.
    rc, out = embedded_hub.exec(
        alice, ["sh", "-c", "find / -xdev -perm /6000 -type f 2>/dev/null; echo END"])
    assert out.strip() == "END", out
    result = probe(embedded_hub, alice, ERRNO_OF + """
print(json.dumps({"setuid": attempt(lambda: os.setuid(0)), "setgid": attempt(lambda: os.setgid(0))}))
""")
    assert result["setuid"]["errno"] == errno.EPERM
    assert result["setgid"]["errno"] == errno.EPERM


def test_setuid_bit_cannot_be_planted(embedded_hub: EmbeddedHub, alice: str) -> None:
    """A file the user marks setuid in home gives nothing: nosuid + no-new-privileges."""
    result = probe(embedded_hub, alice, """
import json, os, shutil, subprocess
shutil.copy("/usr/bin/id", "/home/jovyan/myid")
os.chmod("/home/jovyan/myid", 0o4755)
out = subprocess.run(["/home/jovyan/myid", "-u"], capture_output=True, text=True).stdout.strip()
os.unlink("/home/jovyan/myid")
print(json.dumps({"euid": out}))
""")
    assert result["euid"] == "1000"


def test_fork_bomb_is_contained(embedded_hub: EmbeddedHub, alice: str, bob: str) -> None:
    result = probe(embedded_hub, alice, """
import json, os, signal, time
children, err = [], None
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "errno": err}))
""", timeout=180)
    assert result["errno"] == errno.EAGAIN, result
    assert result["forked"] < 1024
    _assert_healthy(embedded_hub, [alice, bob])


def test_memory_exhaustion_is_contained(embedded_hub: EmbeddedHub, alice: str, bob: str) -> None:
    result = probe(embedded_hub, alice, """
import json, subprocess, sys
hog = '''
import sys
chunks = []
while True:
    chunks.append(bytearray(64 * 1024 * 1024))
    print(len(chunks) * 64, flush=True)
'''
proc = subprocess.run([sys.executable, "-c", hog], capture_output=True, text=True)
lines = proc.stdout.split()
print(json.dumps({"rc": proc.returncode, "peak_mib": int(lines[-1]) if lines else 0}))
""", timeout=180)
    assert result["rc"] == -9, result  # the OOM killer, not a Python MemoryError
    assert result["peak_mib"] <= 2048, result
    _assert_healthy(embedded_hub, [alice, bob])


# -- network ------------------------------------------------------------------------------------

CONNECT = ERRNO_OF + """
def connect(host, port):
    def c():
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        data = s.recv(64)
        s.close()
        if not data.startswith(b"HTTP/"):
            raise OSError(0, "no HTTP answer")
    return attempt(c)
"""


def test_allowlisted_archive_is_reachable(embedded_hub: EmbeddedHub, alice: str,
                                          test_hosts: dict[str, ServiceHandle]) -> None:
    result = probe(embedded_hub, alice, CONNECT + f"print(json.dumps(connect({ARCHIVE!r}, 80)))")
    assert result["errno"] == 0, result


def test_archive_is_not_reachable_outside_astro(embedded_hub: EmbeddedHub,
                                                test_hosts: dict[str, ServiceHandle]) -> None:
    embedded_hub.spawn("carol", "default", groups=())
    result = probe(embedded_hub, "carol", CONNECT + f"print(json.dumps(connect({ARCHIVE!r}, 80)))")
    assert result["errno"] == errno.ENETUNREACH, result
    assert _router_can_reach(embedded_hub, ARCHIVE)
    embedded_hub.stop("carol")


def test_non_allowlisted_host_is_unreachable(embedded_hub: EmbeddedHub, alice: str,
                                             test_hosts: dict[str, ServiceHandle]) -> None:
    assert _router_can_reach(embedded_hub, OTHER_HOST)  # the host is up; only alice is blocked
    result = probe(embedded_hub, alice, CONNECT + f"""
print(json.dumps({{"p80": connect({OTHER_HOST!r}, 80), "archive_other_port": connect({ARCHIVE!r}, 22)}}))
""")
    assert result["p80"]["errno"] == errno.ENETUNREACH, result
    # Routed (the archive's /24 is allowlisted) but port 22 is not: the namespace's
    # nftables rejects it (icmpx admin-prohibited, which connect() reports as EHOSTUNREACH).
    assert result["archive_other_port"]["errno"] == errno.EHOSTUNREACH, result


def test_metadata_address_is_blocked(embedded_hub: EmbeddedHub, alice: str,
                                     test_hosts: dict[str, ServiceHandle]) -> None:
    assert _router_can_reach(embedded_hub, METADATA)  # the stand-in answers in the router ns
    rules = embedded_hub.user_rules(alice)
    for blocked in ("169.254.169.254", "169.254.0.0/16"):
        lines = [line for line in rules.splitlines() if f"daddr {blocked} " in line]
        assert lines, rules
        assert all(("drop" in line or "reject" in line) and "accept" not in line for line in lines)
    assert "169.254" not in embedded_hub.egress.routes(namespace_key(alice))
    result = probe(embedded_hub, alice, CONNECT + f"print(json.dumps(connect({METADATA!r}, 80)))")
    assert result["errno"] == errno.ENETUNREACH, result


def test_hub_internal_services_are_unreachable(embedded_hub: EmbeddedHub, alice: str) -> None:
    opa_port = embedded_hub.opa.port
    proxy_api = embedded_hub.stack.settings.proxy_api_port
    hub_ip = embedded_hub.egress.hub_address
    socket_path = str(embedded_hub.stack.podman.socket_path)  # type: ignore[union-attr]
    result = probe(embedded_hub, alice, CONNECT + f"""
def unix():
    s = socket.socket(socket.AF_UNIX)
    s.connect({socket_path!r})
print(json.dumps({{
    "opa_loopback": connect("127.0.0.1", {opa_port}),
    "opa_hub_ip": connect({hub_ip!r}, {opa_port}),
    "proxy_api_hub_ip": connect({hub_ip!r}, {proxy_api}),
    "engine_socket": attempt(unix),
    "default_engine_socket": attempt(lambda: socket.socket(socket.AF_UNIX).connect("/run/jovial-guard/podman.sock")),
}}))
""")
    # The container's loopback is its own: OPA and the proxy API listen on the host's.
    assert result["opa_loopback"]["errno"] == errno.ECONNREFUSED, result
    # The hub address is routed (for the hub API only); other ports are rejected by nftables.
    assert result["opa_hub_ip"]["errno"] == errno.EHOSTUNREACH, result
    assert result["proxy_api_hub_ip"]["errno"] == errno.EHOSTUNREACH, result
    assert result["engine_socket"]["errno"] == errno.ENOENT, result
    assert result["default_engine_socket"]["errno"] == errno.ENOENT, result


def test_hub_api_is_reachable_from_the_container(embedded_hub: EmbeddedHub, alice: str) -> None:
    hub_ip = embedded_hub.egress.hub_address
    port = embedded_hub.stack.settings.hub_port
    result = probe(embedded_hub, alice, CONNECT + f"print(json.dumps(connect({hub_ip!r}, {port})))")
    assert result["errno"] == 0, result


# -- real work ------------------------------------------------------------------------------------

def test_numpy_and_astropy_work(embedded_hub: EmbeddedHub, alice: str) -> None:
    result = probe(embedded_hub, alice, """
import json
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
c = SkyCoord(ra=10.68458 * u.deg, dec=41.26917 * u.deg)
m = np.linalg.inv(np.array([[2.0, 0.0], [0.0, 4.0]]))
print(json.dumps({"gal_l": round(float(c.galactic.l.deg), 2), "inv": m.tolist(),
                  "pc": float((1 * u.pc).to(u.lyr).value) > 3.2}))
""")
    assert result["gal_l"] == 121.17
    assert result["inv"] == [[0.5, 0.0], [0.0, 0.25]]
    assert result["pc"] is True


def test_single_user_server_answers_through_the_proxy(embedded_hub: EmbeddedHub, alice: str) -> None:
    resp = requests.get(f"{embedded_hub.url}/user/{alice}/api/status",
                        headers={"Authorization": f"token {embedded_hub.api_token}"}, timeout=15)
    assert resp.status_code == 200, resp.text
    assert "kernels" in resp.json()


# -- policy denials and fail-closed ----------------------------------------------------------------

def test_denied_profile_fails_with_policy_message(embedded_hub: EmbeddedHub) -> None:
    with pytest.raises(SpawnFailed) as caught:
        embedded_hub.spawn("dave", "large-memory", groups=("astro",))
    assert caught.value.status == 403, caught.value
    assert "profiles/not-allowed" in caught.value.message
    assert "large-memory" in caught.value.message
    assert not embedded_hub.container_exists("dave")
    assert not any(n.startswith(f"{NETNS_PREFIX}-u-dave") for n in _netns())
    denial = [d for d in embedded_hub.decisions() if d["user"] == "dave"][-1]
    assert denial["allowed"] is False and [r["rule"] for r in denial["reasons"]] == ["profiles/not-allowed"]


def test_large_memory_group_member_gets_the_profile(embedded_hub: EmbeddedHub) -> None:
    embedded_hub.spawn("erin", "large-memory", groups=("large-memory",))
    hc = embedded_hub.container("erin").attrs["HostConfig"]
    assert hc["Memory"] == 8 * 2**30 and hc["NanoCpus"] == 2 * 10**9
    embedded_hub.stop("erin")
    assert not embedded_hub.container_exists("erin")
    assert not any(n.startswith(f"{NETNS_PREFIX}-u-erin") for n in _netns())


def test_opa_down_neither_opens_nor_stops_spawns(embedded_hub: EmbeddedHub) -> None:
    """OPA killed: the hub decides with the compiled policy it verified, so a profile the
    user may not have is still refused with the policy's reason and an allowed one starts
    (nothing the hub decides goes through OPA; no verified policy at all refuses every
    spawn: tests/unit/test_spawn_compiled_policy.py)."""
    embedded_hub.opa.kill()
    try:
        with pytest.raises(SpawnFailed) as caught:
            embedded_hub.spawn("frank", "large-memory", groups=("astro",))
        assert caught.value.status == 403, caught.value
        assert "profiles/not-allowed" in caught.value.message
        assert not embedded_hub.container_exists("frank")
        embedded_hub.spawn("frank", "default", groups=())
        assert embedded_hub.container_exists("frank")
        embedded_hub.stop("frank")
    finally:
        embedded_hub.opa.stop()
        embedded_hub.opa.start()


# -- helpers ---------------------------------------------------------------------------------------

def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _assert_healthy(hub: EmbeddedHub, users: list[str]) -> None:
    assert requests.get(hub.api_url + "/", timeout=10).status_code == 200
    for user in users:
        resp = requests.get(f"{hub.url}/user/{user}/api/status",
                            headers={"Authorization": f"token {hub.api_token}"}, timeout=15)
        assert resp.status_code == 200, (user, resp.status_code, resp.text[:200])
