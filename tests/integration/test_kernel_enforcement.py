"""The kernel, not convention, enforces the notebook hardening.

Real podman (project service, project storage), the real notebook image, the committed
seccomp profile, a per-user egress namespace with nftables rules, and test hosts in
namespaces this module creates. One container runs ``probes/kernel_probe.py`` (everything a
hostile notebook would try) and each test checks one outcome, so a failure names the hole.
Network traffic goes only to namespaces made here; the metadata address is a stand-in test
host routed only inside the project's router namespace.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jovial_guard.decision import Egress, EgressRule
from jovial_guard.hardening.egress import EgressNamespaces, NamespaceHandle
from jovial_guard.hardening.seccomp import notebook_profile_path, validate_profile_file
from jovial_guard.runtime.image import NOTEBOOK_IMAGE
from jovial_guard.runtime.podman import PodmanService

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PROBE = (Path(__file__).parent / "probes" / "kernel_probe.py").read_text()
LABEL = {"org.jovial-guard.test": "kernel-enforcement"}
POOL = "10.218.0.0/16"
ALLOWED_HOST = "10.218.250.10"      # inside the allowlisted CIDR
DENIED_HOST = "203.0.113.10"        # routed (port 9999 is allowlisted) but 8080 is not
METADATA_STANDIN = "169.254.169.254"  # exists only inside this module's router namespace
LINK_LOCAL_HOST = "169.254.10.10"   # same allowlisted /16 as the stand-in: proves the rule
PORT = 8080
HUB_PORT = 18081
SERVER = (
    "import socket,sys\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])));s.listen()\n"
    "while True:\n c,_=s.accept();c.sendall(sys.argv[3].encode());c.close()\n"
)


def _remove_labelled(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"label": "org.jovial-guard.test"}):
        if container.labels.get("org.jovial-guard.test") == LABEL["org.jovial-guard.test"]:
            container.remove(force=True)


@pytest.fixture(scope="module")
def engine(notebook_engine: PodmanService) -> PodmanService:
    return notebook_engine


@pytest.fixture(scope="module")
def client(engine: PodmanService) -> Iterator[docker.DockerClient]:
    cli = engine.docker_client()
    _remove_labelled(cli)
    try:
        yield cli
    finally:
        _remove_labelled(cli)
        cli.close()


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, Any]]:
    """A user namespace with an egress decision, plus test hosts behind the router."""
    egress_ns = EgressNamespaces("jgk", pool=POOL)
    egress_ns.teardown()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        decision = Egress(
            allow=(
                EgressRule("10.218.250.0/24", (PORT,), "tcp", "test archive"),
                EgressRule("169.254.0.0/16", (PORT,), "tcp", "link-local test range"),
                EgressRule("203.0.113.0/24", (9999,), "tcp", "other port only"),
            ),
            dns=(),
            blocked=("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        )
        handle = egress_ns.create("probe", decision, hub_addresses=[egress_ns.hub_rule(HUB_PORT)])
        hosts = {
            "allowed": ALLOWED_HOST, "denied": DENIED_HOST,
            "metadata": METADATA_STANDIN, "linklocal": LINK_LOCAL_HOST,
        }
        for name, address in hosts.items():
            svc = egress_ns.attach_service(name, address)
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", svc.name, sys.executable, "-c", SERVER, "0.0.0.0",
                 str(PORT), name]))
        # A stand-in hub API on the host side of the project link.
        procs.append(subprocess.Popen(
            [sys.executable, "-c", SERVER, egress_ns.hub_address, str(HUB_PORT), "hub"]))
        _wait_listening(egress_ns, hosts)
        yield {"ns": egress_ns, "handle": handle, "hosts": hosts}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        egress_ns.teardown()


def _wait_listening(egress_ns: EgressNamespaces, hosts: dict[str, str]) -> None:
    deadline = time.monotonic() + 15
    for name in hosts:
        ns = egress_ns.service_ns(name)
        while True:
            out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH"],
                                 capture_output=True, text=True).stdout
            if f":{PORT}" in out:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"test host {name} never listened")
            time.sleep(0.05)


def hardened_kwargs(handle: NamespaceHandle, *, seccomp: str) -> dict[str, Any]:
    """The flags the spawn hook renders, written out by hand for the engine test."""
    return {
        "user": "1000:1000",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,size=64m",
                  "/home/jovyan": "rw,nosuid,nodev,U,mode=0700,size=64m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", f"seccomp={seccomp}"],
        "pids_limit": 256,
        "mem_limit": "512m",
        "network_mode": handle.network_mode,
        "labels": LABEL,
    }


def run_probe(client: docker.DockerClient, kwargs: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    container = client.containers.create(NOTEBOOK_IMAGE, ["python3", "-c", PROBE, json.dumps(spec)],
                                         **kwargs)
    try:
        container.start()
        status = container.wait(timeout=90)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        if status.get("StatusCode") != 0:
            raise AssertionError(f"probe container failed: {status}\n{logs}")
        return json.loads(logs.strip().splitlines()[-1])
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def probe(client: docker.DockerClient, network: dict[str, Any]) -> dict[str, Any]:
    hosts = network["hosts"]
    spec = {"connect": {name: [address, PORT] for name, address in hosts.items()}}
    spec["connect"]["hub"] = [network["ns"].hub_address, HUB_PORT]
    spec["connect"]["hub_other_port"] = [network["ns"].hub_address, 22]
    seccomp = str(validate_profile_file(notebook_profile_path()))
    result = run_probe(client, hardened_kwargs(network["handle"], seccomp=seccomp), spec)
    # Evidence for humans: what each attempt returned, and the rules that were installed.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "kernel_probe.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    (ARTIFACTS / "kernel_probe_rules.nft").write_text(network["ns"].rules("probe"))
    return result


def _denied(result: dict[str, Any], *errnos: int) -> None:
    assert result["ok"] is False, f"expected refusal, got success: {result}"
    assert result["errno"] in errnos, result


# --- identity and privileges ------------------------------------------------------------------

def test_runs_as_uid_1000_without_privileges(probe: dict[str, Any]) -> None:
    assert probe["uid"]["detail"] == "1000"
    assert probe["no_new_privs"]["detail"] == "1"
    assert int(probe["cap_eff"]["detail"], 16) == 0
    assert probe["seccomp_mode"]["detail"] == "2"


def test_no_setuid_binaries_in_image(probe: dict[str, Any]) -> None:
    assert probe["setuid_files"]["ok"], probe["setuid_files"]


def test_hosts_file_names_no_host_address(probe: dict[str, Any]) -> None:
    hosts = probe["etc_hosts"]["detail"]
    assert "host.containers.internal" not in hosts
    addresses = {line.split()[0] for line in hosts.splitlines() if line.strip() and not line.startswith("#")}
    assert addresses <= {"127.0.0.1", "::1", "10.218.0.2"}, hosts


# --- file system ------------------------------------------------------------------------------

def test_root_and_usr_are_read_only(probe: dict[str, Any]) -> None:
    _denied(probe["write_usr"], errno.EROFS)
    _denied(probe["write_root"], errno.EROFS)


def test_tmp_and_home_are_writable(probe: dict[str, Any]) -> None:
    assert probe["write_tmp"]["ok"], probe["write_tmp"]
    assert probe["write_home"]["ok"], probe["write_home"]


# --- seccomp and capabilities ------------------------------------------------------------------

def test_no_new_user_namespace(probe: dict[str, Any]) -> None:
    _denied(probe["unshare_user_syscall"], errno.EPERM)
    _denied(probe["unshare_user_cmd"], errno.EPERM)
    _denied(probe["clone_newuser"], errno.EPERM, errno.ENOSYS)
    _denied(probe["setns"], errno.EPERM)


@pytest.mark.parametrize("call", ["keyctl", "add_key", "userfaultfd", "bpf", "perf_event_open",
                                  "io_uring_setup", "kexec_load", "init_module"])
def test_dangerous_syscalls_are_refused(probe: dict[str, Any], call: str) -> None:
    _denied(probe[call], errno.EPERM)


def test_mount_is_refused(probe: dict[str, Any]) -> None:
    _denied(probe["mount"], errno.EPERM)


def test_raw_socket_is_refused(probe: dict[str, Any]) -> None:
    _denied(probe["raw_socket"], errno.EPERM)


def test_ptrace_is_refused(probe: dict[str, Any]) -> None:
    _denied(probe["ptrace_attach"], errno.EPERM)


def test_pids_limit_stops_a_fork_bomb(probe: dict[str, Any]) -> None:
    _denied(probe["fork_bomb"], errno.EAGAIN)
    assert "stopped after" in probe["fork_bomb"]["detail"]


def test_memory_limit_kills_an_allocation_beyond_it(probe: dict[str, Any]) -> None:
    """900 MiB in a 512 MiB container: the kernel's OOM killer ends the child (SIGKILL)."""
    assert probe["exhaust_memory"]["ok"] is False
    assert "exited with -9" in probe["exhaust_memory"]["detail"]


def test_scientific_stack_works(probe: dict[str, Any]) -> None:
    assert probe["scientific"] == {"ok": True, "errno": None, "detail": "0.045 km"}


# --- egress -----------------------------------------------------------------------------------

def test_allowlisted_host_and_hub_are_reachable(probe: dict[str, Any]) -> None:
    assert probe["connect_allowed"]["detail"] == "allowed"
    assert probe["connect_linklocal"]["detail"] == "linklocal"
    assert probe["connect_hub"]["detail"] == "hub"


def test_non_allowlisted_destinations_are_refused(probe: dict[str, Any]) -> None:
    _denied(probe["connect_denied"], errno.EHOSTUNREACH, errno.ENETUNREACH)
    _denied(probe["connect_hub_other_port"], errno.EHOSTUNREACH)


def test_metadata_address_is_blocked_by_rule(probe: dict[str, Any], network: dict[str, Any]) -> None:
    """The stand-in answers (it is routed, inside the allowlisted /16), yet the rule refuses it."""
    _denied(probe["connect_metadata"], errno.EHOSTUNREACH)
    egress_ns: EgressNamespaces = network["ns"]
    assert "169.254.0.0/16 via" in egress_ns.routes("probe")
    rules = egress_ns.rules("probe")
    metadata_rule = next(line for line in rules.splitlines() if "169.254.169.254" in line and "ip daddr" in line)
    assert "reject" in metadata_rule
    packets = int(metadata_rule.split("counter packets ")[1].split()[0])
    assert packets >= 1, metadata_rule
    # The host itself never learns a route to the metadata stand-in.
    host_route = subprocess.run(["ip", "route", "get", METADATA_STANDIN], capture_output=True, text=True).stdout
    assert "jgk-" not in host_route


def test_user_namespace_has_no_default_route(network: dict[str, Any]) -> None:
    routes = network["ns"].routes("probe")
    assert "default" not in routes
    router = subprocess.run(["ip", "-n", network["ns"].router, "route", "show"],
                            capture_output=True, text=True, check=True).stdout
    assert "default" not in router


# --- controls: the enforcement comes from our profile and flags ---------------------------------

def test_engine_default_profile_would_allow_keyctl(client: docker.DockerClient, network: dict[str, Any]) -> None:
    """Control: same container with the engine's default seccomp; keyctl then succeeds.

    Shows the refusals above come from the notebook profile, not from the kernel or image.
    """
    kwargs = hardened_kwargs(network["handle"], seccomp="/usr/share/containers/seccomp.json")
    result = run_probe(client, kwargs, {"skip": ["fork_bomb", "exhaust_memory", "setuid_files",
                                                 "scientific", "ptrace_attach"]})
    assert "fork_bomb" not in result
    assert result["keyctl"]["ok"], result["keyctl"]
    # Everything the flags (not seccomp) enforce still holds.
    _denied(result["write_usr"], errno.EROFS)
    _denied(result["raw_socket"], errno.EPERM)


def test_missing_seccomp_file_is_refused(client: docker.DockerClient, network: dict[str, Any], tmp_path: Path) -> None:
    kwargs = hardened_kwargs(network["handle"], seccomp=str(tmp_path / "missing.json"))
    with pytest.raises(docker.errors.APIError):
        container = client.containers.create(NOTEBOOK_IMAGE, ["true"], **kwargs)
        try:
            container.start()
        finally:
            container.remove(force=True)


def test_broken_seccomp_file_is_refused(client: docker.DockerClient, network: dict[str, Any], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    kwargs = hardened_kwargs(network["handle"], seccomp=str(broken))
    with pytest.raises(docker.errors.APIError):
        container = client.containers.create(NOTEBOOK_IMAGE, ["true"], **kwargs)
        try:
            container.start()
        finally:
            container.remove(force=True)


def test_a_real_kernel_runs_a_cell_under_the_hardening(client: docker.DockerClient, network: dict[str, Any]) -> None:
    """The tightened profile still lets Jupyter work: ipykernel over zmq, threads, numpy."""
    code = (Path(__file__).parent / "probes" / "kernel_session.py").read_text()
    seccomp = str(validate_profile_file(notebook_profile_path()))
    container = client.containers.create(NOTEBOOK_IMAGE, ["python3", "-c", code],
                                         **hardened_kwargs(network["handle"], seccomp=seccomp))
    try:
        container.start()
        status = container.wait(timeout=120)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status.get("StatusCode") == 0, logs
    assert "KERNEL-OUT 3.0" in logs, logs


def test_notebook_server_answers_the_hub_side_through_the_router(
        client: docker.DockerClient, network: dict[str, Any]) -> None:
    """What the proxy does: reach the user's server at the namespace address, port 8888."""
    import requests

    handle: NamespaceHandle = network["handle"]
    seccomp = str(validate_profile_file(notebook_profile_path()))
    container = client.containers.create(
        NOTEBOOK_IMAGE,
        ["jupyter", "server", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888",
         "--IdentityProvider.token=probe-token", "--ServerApp.open_browser=False"],
        **hardened_kwargs(handle, seccomp=seccomp))
    try:
        container.start()
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"http://{handle.address}:8888/api/status",
                                      headers={"Authorization": "token probe-token"}, timeout=2)
                break
            except requests.RequestException:
                container.reload()
                if container.status == "exited":
                    break
                time.sleep(0.3)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status is not None and status.status_code == 200, logs[-2000:]
    assert "last_activity" in status.json()
