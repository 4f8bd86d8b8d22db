"""A real single-node Kubernetes cluster for the tests, under one temporary directory.

etcd (Debian) and kube-apiserver come from ``LocalKubeCluster``; on top of it run
kube-scheduler, kube-controller-manager (lifts the node's not-ready taint, creates each
namespace's ServiceAccount and ``kube-root-ca.crt``) and a kubelet on containerd v2 with
Debian's runc and CNI plugins, all built by scripts/test.d/ and found by ``node_tools``.

What this host needs, and why each setting is what it is:

* cgroup v1 only: the kubelet runs with ``failCgroupV1: false`` and ``cgroupfs``; a cgroup
  v2 node is the supported production setup (upstream puts cgroup v1 in maintenance).
* root lacks CAP_SYS_RESOURCE, so runc cannot lower the sandbox's ``oom_score_adj`` to the
  kubelet's -998: containerd runs with ``restrict_oom_score_adj = true``.
* no iptables chains (``makeIPTablesUtilChains: false``), no read-only port, the kubelet's
  API takes only client certificates of the cluster CA, and no kube-proxy or cluster DNS.
* the kubelet sets six kernel tunables on start (vm.overcommit_memory, kernel.panic, ...);
  their previous values are restored on teardown.

The control plane and the kubelet authenticate as the cluster admin (``system:masters``):
this cluster exists to run the pods a test creates, not to test node authorization.

Teardown deletes every pod through the kubelet, kills what is left by process id (tasks,
shims, container processes found in the cluster's cgroups), unmounts everything under the
directory, deletes the bridges, removes the run's cgroup root (the kubelet's ``cgroupRoot``)
and then the directory.
``leftovers()`` lists anything that survived, for tests to assert on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.node.profiles import default_source_dir, load_profiles
from jovial_guard.node.profiles import install as install_profiles
from jovial_guard.paths import STATE_ENV, state_dir

from .kube_cluster import LocalKubeCluster
from .node_images import PAUSE_IMAGE, import_into, notebook_archive, pause_archive
from .node_network import NodeNetwork, link_names
from .node_tools import CNI_BIN_DIR, tool, tool_dir

NODE_NAME = "jg-node"
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
CGROUP_ROOT = Path("/sys/fs/cgroup")
POD_PIDS_LIMIT = 1024


def containerd_config(root: Path, *, cni_conf_dir: Path, cni_bin_dirs: tuple[str, ...] = ()) -> str:
    """containerd's v3 configuration: its own root, state and socket, nothing shared."""
    return f"""version = 3
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.internal.v1.opt",
  "io.containerd.grpc.v1.introspection.tracing", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{root / 'containerd.sock'}"
[ttrpc]
  address = "{root / 'containerd.sock.ttrpc'}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{tool('runc')}"
        SystemdCgroup = false
        Root = "{root / 'runc'}"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = {json.dumps([str(CNI_BIN_DIR), *cni_bin_dirs])}
    conf_dir = "{cni_conf_dir}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def kubelet_config(root: Path, *, socket: Path, node_ip: str, client_ca: Path, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "makeIPTablesUtilChains": False,
        "readOnlyPort": 0,
        "address": node_ip,
        "port": port,
        "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(client_ca)}},
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(root / "pod-logs"),
        "volumePluginDir": str(root / "volume-plugins"),
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "mergeDefaultEvictionSettings": False,
        "serializeImagePulls": False,
        "maxPods": 16,
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "nodeStatusUpdateFrequency": "2s",
        # The pod's pids cgroup limit (the kubelet's default is unlimited); the same number as
        # the policy's defaults.pids_limit, which the embedded engine applies per container.
        "podPidsLimit": POD_PIDS_LIMIT,
    }


class NodeCluster:
    """The whole cluster; a context manager. ``kubeconfig`` authenticates as cluster admin."""

    def __init__(self, *, parent: Path | None = None, preinstall_profiles: bool = True,
                 apiserver_args: tuple[str, ...] = (),
                 cni_chain: tuple[dict[str, Any], ...] = (),
                 pod_routes: Callable[[NodeNetwork], tuple[dict[str, str], ...]] | None = None) -> None:
        #: False leaves the kubelet's seccomp directory empty, for the node agent to fill.
        self.preinstall_profiles = preinstall_profiles
        #: Plugins chained after the bridge (their binaries go to ``cni_bin_dir``), and routes
        #: every pod gets from IPAM.
        self.cni_chain = cni_chain
        self.pod_routes = pod_routes
        base = parent or (state_dir() if os.environ.get(STATE_ENV) else Path(tempfile.gettempdir()))
        base.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="kube-node-", dir=base))
        self.control = LocalKubeCluster(apiserver=tool("kube-apiserver"), etcd=tool("etcd"),
                                        workdir=self.dir / "control", extra_args=apiserver_args)
        self.network = NodeNetwork()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.tunables: dict[str, str] = {}
        #: The kubelet's cgroupRoot: one per run, so clusters of parallel runs never share cgroups.
        self.cgroup_name = f"jg-node-{self.network.suffix}"
        self.socket = self.dir / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.control.kubeconfig

    @property
    def cni_bin_dir(self) -> Path:
        """The run's own CNI plugin directory (after Debian's), for chained plugins."""
        return self.dir / "cni" / "bin"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    # -- start ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=env)
        log.close()

    def timed(self, what: str, action: Any) -> Any:
        """Run one start or teardown step; its duration goes to stderr (pytest shows it on failure)."""
        started = time.monotonic()
        try:
            return action()
        finally:
            print(f"node cluster: {what}: {time.monotonic() - started:.1f} s", file=sys.stderr)

    def start(self) -> NodeCluster:
        self.tunables = {t: (Path("/proc/sys") / t).read_text().strip() for t in KERNEL_TUNABLES}
        self.network.create()
        # Pods may reach the API server through a forwarder on the host's pod-bridge address
        # (node_daemonset.ApiForwarder, standing in for kube-proxy): its certificate names it.
        self.control.serving_ips.append(self.network.host_pod_ip)
        self.timed("etcd + kube-apiserver", self.control.start)
        self.timed("containerd + image import", self._start_containerd)
        self._start_control_plane_controllers()
        self._start_kubelet()
        self.timed("node Ready", lambda: self._wait(self._node_schedulable, 120, "node Ready without the not-ready taint"))
        return self

    def _start_containerd(self) -> None:
        cdir = self.dir / "containerd"
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True)
        routes = self.pod_routes(self.network) if self.pod_routes else ()
        conflist = self.network.cni_conflist(cni / "ipam", chain=self.cni_chain, routes=routes)
        (cni / "net.d" / "10-jg-pods.conflist").write_text(json.dumps(conflist, indent=1))
        self.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "config.toml").write_text(containerd_config(cdir, cni_conf_dir=cni / "net.d",
                                                            cni_bin_dirs=(str(self.cni_bin_dir),)))
        env = dict(os.environ, PATH=f"{tool_dir('containerd-shim-runc-v2')}:{os.environ.get('PATH', '')}")
        self._spawn("containerd", [tool("containerd"), "--config", str(cdir / "config.toml"), "--log-level", "info"], env=env)
        self._wait(lambda: self.ctr("version").returncode == 0, 60, "containerd answering on its socket")
        for archive in (pause_archive(), notebook_archive()):
            import_into(tool("ctr"), str(self.socket), archive)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool("ctr"), "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, check=False, timeout=120)

    def _start_control_plane_controllers(self) -> None:
        pki = self.control.dir / "pki"
        kc = str(self.kubeconfig)
        self._spawn("kube-scheduler", [tool("kube-scheduler"), f"--kubeconfig={kc}", "--leader-elect=false",
                                       "--secure-port=0", "--v=1"])
        self._spawn("kube-controller-manager", [
            tool("kube-controller-manager"), f"--kubeconfig={kc}", "--leader-elect=false", "--secure-port=0",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=false", "--v=1"])

    def cgroup_dirs(self) -> list[Path]:
        """The run's cgroup directory in every v1 hierarchy (and the hybrid unified one)."""
        return [h / self.cgroup_name for h in sorted(CGROUP_ROOT.iterdir()) if h.is_dir() and not h.is_symlink()]

    def _create_cgroups(self) -> None:
        for directory in self.cgroup_dirs():
            directory.mkdir()
            if directory.parent.name == "cpuset":
                # A new cpuset has no CPUs or memory nodes until given its parent's.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (directory / knob).write_text((directory.parent / knob).read_text())

    def _start_kubelet(self) -> None:
        root = self.kubelet_root
        self._create_cgroups()
        if self.preinstall_profiles:
            # What the node agent would install: the profiles resolved for this architecture.
            install_profiles(load_profiles(default_source_dir()), root)
        config = kubelet_config(self.dir, socket=self.socket, node_ip=self.network.node_ip,
                                client_ca=self.control.dir / "pki" / "ca.crt", port=free_port(self.network.node_ip))
        config["cgroupRoot"] = f"/{self.cgroup_name}"
        (self.dir / "kubelet.json").write_text(json.dumps(config, indent=1))
        self._spawn("kubelet", [
            tool("kubelet"), f"--config={self.dir / 'kubelet.json'}", f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={root}", f"--cert-dir={root / 'pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.network.node_ip}", "--v=1"])

    def seccomp_dir(self) -> Path:
        """The kubelet's Localhost profile directory (``localhostProfile`` is relative to it)."""
        return self.kubelet_root / "seccomp"

    def _node_schedulable(self) -> bool:
        node = self.get_object("node", NODE_NAME)
        if node is None:
            return False
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not any(t["key"].startswith("node.kubernetes.io/") for t in node["spec"].get("taints", []))

    def get_object(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """GET one object through the API (no kubectl binary needed); None when absent."""
        import urllib.error
        import urllib.request

        plural = {"node": "nodes", "pod": "pods", "serviceaccount": "serviceaccounts"}[kind]
        path = f"/api/v1/namespaces/{namespace}/{plural}/{name}" if namespace else f"/api/v1/{plural}/{name}"
        try:
            with urllib.request.urlopen(self.control.url + path, context=self.control.ssl_context(), timeout=5) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.log(name)[-3000:]}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - the API may still be starting; keep polling
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}; kubelet log:\n{self.log('kubelet')[-3000:]}")

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        from .node_teardown import teardown

        teardown(self)

    def __enter__(self) -> NodeCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def make_namespace(self, api: Any, name: str, labels: dict[str, str] | None = None, *,
                       timeout: float = 60.0) -> None:
        """Create namespace ``name`` through ``api`` (a CoreV1Api) and wait until
        kube-controller-manager made its default ServiceAccount: no pod is admitted before."""
        api.create_namespace({"metadata": {"name": name, **({"labels": labels} if labels else {})}})
        deadline = time.monotonic() + timeout
        while self.get_object("serviceaccount", "default", name) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-controller-manager never created the default ServiceAccount of {name}")
            time.sleep(0.5)

    def fail_on_leftovers(self) -> None:
        """Fail the test module when the teardown left anything behind (after ``stop``)."""
        left = self.leftovers()
        if left:
            pytest.fail("the cluster's teardown left: " + ", ".join(left), pytrace=False)

    def leftovers(self) -> list[str]:
        from .node_teardown import leftovers

        return leftovers(self)

    def stop_process(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def links(self) -> set[str]:
        return {n for n in link_names() if n.endswith(self.network.suffix)}


def free_port(address: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
