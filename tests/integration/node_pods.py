"""The pods the node tests run: KubeSpawner's notebook pod, hardened by the project's renderer.

``hardened_pod`` takes the pod KubeSpawner makes for a user and applies ``render_pod_patch``
for the default profile's SecuritySpec (the same patch the webhook returns), with the
seccomp profile under test. Its container runs ``PROBE`` instead of the notebook server: a
report of what the kernel applied (status fields, errnos of writes and syscalls, mount
flags), written to the termination message so no kubelet API or log access is needed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonpatch

from jovial_guard.decision import ProfileRef, SecuritySpec
from jovial_guard.hardening.render_pod import render_pod_patch
from tests.admission.kubespawner_pods import kubespawner_pod_sync

from .node_images import notebook_image

REPO = Path(__file__).resolve().parents[2]
#: Pods hardened by the renderer in the test; the webhook watches only WEBHOOK_NAMESPACE.
NAMESPACE = "jg-render"
WEBHOOK_NAMESPACE = "jhub"
NOTEBOOK_PROFILE = "jovial-guard/notebook.json"

#: Runs as the container's command; reports through the termination message (no kubelet
#: API or log access needed).
PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out = {k: status[k].strip() for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd")}
out["uid"] = os.getuid()
def err(fn):
    try:
        fn()
        return 0
    except OSError as exc:
        return exc.errno
out["write_root"] = err(lambda: open("/probe", "w"))
out["write_tmp"] = err(lambda: open("/tmp/probe", "w").write("x"))
out["write_home"] = err(lambda: open(os.path.expanduser("~/probe"), "w").write("x"))
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src = ctypes.create_string_buffer(b"jovial", 8)
dst = ctypes.create_string_buffer(8)
local = iovec(ctypes.cast(dst, ctypes.c_void_p), 8)
remote = iovec(ctypes.cast(src, ctypes.c_void_p), 8)
ctypes.set_errno(0)
n = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out["process_vm_readv"] = 0 if n == 8 and dst.value == b"jovial" else ctypes.get_errno()
ctypes.set_errno(0)
out["unshare"] = 0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno()
mounts = {}
for line in open("/proc/self/mounts"):
    parts = line.split()
    if parts[1] in ("/", "/tmp", os.path.expanduser("~")):
        mounts[parts[1]] = sorted(o for o in parts[3].split(",") if o in ("ro", "rw", "nosuid", "nodev", "noexec"))
out["mounts"] = mounts
out["default_route"] = any(l.split()[1] == "00000000" for l in open("/proc/net/route").read().splitlines()[1:])
print(json.dumps(out))
if os.path.exists("/dev/termination-log"):
    open("/dev/termination-log", "w").write(json.dumps(out))
"""


def security_spec(seccomp: ProfileRef) -> SecuritySpec:
    """The default profile's SecuritySpec (the renderer's golden vector) with ``seccomp``,
    without the node label requirement (these pods test the kernel, not the scheduling)."""
    vector = json.loads((REPO / "tests" / "vectors" / "render_pod" / "bare_notebook.json").read_text())
    return dataclasses.replace(SecuritySpec.from_json(vector["spec"]), seccomp=seccomp, node_selector=())


def probe_pod(name: str, namespace: str) -> dict[str, Any]:
    """KubeSpawner's pod for a user, as the hub would POST it, running the probe once."""
    pod = kubespawner_pod_sync(username=name, image=notebook_image(), namespace=namespace)
    pod["metadata"]["name"] = name
    pod["metadata"]["namespace"] = namespace
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["automountServiceAccountToken"] = False
    container = pod["spec"]["containers"][0]
    container.update(command=["python", "-c", PROBE], args=[], imagePullPolicy="Never")
    container.pop("lifecycle", None)
    return pod


def hardened_pod(name: str, seccomp: ProfileRef) -> dict[str, Any]:
    """The probe pod patched by the project's renderer for the default profile."""
    pod = probe_pod(name, NAMESPACE)
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, render_pod_patch(pod, security_spec(seccomp)))
    return patched
