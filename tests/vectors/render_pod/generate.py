"""Regenerate the render_pod golden vectors: `python tests/vectors/render_pod/generate.py`.

Each vector is {"pod", "spec", "patch"}; the test asserts render_pod_patch(pod, spec) ==
patch. Regenerate only after reviewing the rendered change by eye: the vectors are the
contract, not a snapshot to refresh blindly.
"""

from __future__ import annotations

import json
from pathlib import Path

from jovial_guard.decision import SecuritySpec
from jovial_guard.hardening.render_pod import render_pod_patch

HERE = Path(__file__).parent

SPEC = {
    "profile": "default", "notebook": True, "uid": 1000, "gid": 100, "fs_group": 100,
    "read_only_root": True, "writable_paths": ["/tmp", "/home/jovyan"],
    "capabilities": {"drop": ["ALL"], "add": []}, "no_new_privileges": True,
    "seccomp": {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"}, "apparmor": {"type": "RuntimeDefault"},
    "resources": {"cpu_limit": "1", "memory_limit": "2Gi", "cpu_request": "100m", "memory_request": "512Mi", "gpu": 0, "pids_limit": 1024},
    "egress": {"allow": [], "dns": [], "hub": [], "blocked": []}, "storage": None,
    "node_selector": {"jovial-guard.io/profiles-ready": "true"},
}
BATCH_SPEC = {**SPEC, "notebook": False, "read_only_root": False, "writable_paths": [],
              "seccomp": {"type": "RuntimeDefault"}, "node_selector": {}}
GPU_SPEC = {**SPEC, "resources": {**SPEC["resources"], "gpu": 1}}
#: A notebook profile whose policy data chooses the learned seccomp profile.
LEARNED_SPEC = {**SPEC, "seccomp": {"type": "Localhost", "localhostProfile": "jovial-guard/notebook-learned.json"}}
STAGED_SPEC = {**SPEC, "storage": {"fileset": "home/alice", "mode": "rw", "mount_path": "/lustre/home",
                                   "node_stage": "/var/lib/jovial-guard-node/staging/alice"}}
USERNS_SPEC = {**SPEC, "host_users": False}
IMAGE = "quay.io/jupyter/base-notebook:2024-05-27"

CASES = {
    "bare_notebook": (SPEC, {"metadata": {}, "spec": {"containers": [{"name": "nb", "image": IMAGE}]}}),
    "already_compliant": (SPEC, {"metadata": {}, "spec": {
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100},
        "volumes": [{"name": "t", "emptyDir": {}}, {"name": "h", "emptyDir": {}}],
        "containers": [{"name": "nb", "image": IMAGE,
                        "volumeMounts": [{"name": "t", "mountPath": "/tmp"}, {"name": "h", "mountPath": "/home/jovyan"}],
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}}]}}),
    "partial_security_context": (SPEC, {"metadata": {}, "spec": {
        "securityContext": {"fsGroup": 100},
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}],
        "containers": [{"name": "nb", "image": IMAGE, "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
                        "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE"]}},
                        "resources": {"requests": {"cpu": "1500m"}}}]}}),
    "request_above_profile_limit": (SPEC, {"metadata": {}, "spec": {"containers": [
        {"name": "nb", "image": IMAGE, "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}]}}),
    "init_and_ephemeral": (SPEC, {"metadata": {}, "spec": {
        "initContainers": [{"name": "init", "image": IMAGE}],
        "containers": [{"name": "nb", "image": IMAGE}, {"name": "sidecar", "image": IMAGE, "volumeMounts": []}],
        "ephemeralContainers": [{"name": "debug", "image": IMAGE}]}}),
    "batch_pod_not_notebook": (BATCH_SPEC, {"metadata": {}, "spec": {"containers": [{"name": "job", "image": IMAGE}]}}),
    "node_selector_merged": (SPEC, {"metadata": {}, "spec": {
        "nodeSelector": {"topology.kubernetes.io/zone": "a", "jovial-guard.io/profiles-ready": "false"},
        "containers": [{"name": "nb", "image": IMAGE}]}}),
    "learned_seccomp_profile": (LEARNED_SPEC, {"metadata": {}, "spec": {"containers": [{"name": "nb", "image": IMAGE}]}}),
    "storage_staged_on_node": (STAGED_SPEC, {"metadata": {}, "spec": {
        "volumes": [{"name": "t", "emptyDir": {}}],
        "containers": [{"name": "nb", "image": IMAGE, "volumeMounts": [{"name": "t", "mountPath": "/tmp"}]},
                       {"name": "sidecar", "image": IMAGE}]}}),
    "own_user_namespace": (USERNS_SPEC, {"metadata": {}, "spec": {"containers": [{"name": "nb", "image": IMAGE}]}}),
    "own_user_namespace_kept": (USERNS_SPEC, {"metadata": {}, "spec": {"hostUsers": False,
                                                                      "containers": [{"name": "nb", "image": IMAGE}]}}),
    "gpu_profile": (GPU_SPEC, {"metadata": {}, "spec": {"containers": [{"name": "nb", "image": IMAGE, "resources": {}}]}}),
}


def main() -> None:
    for name, (spec, pod) in CASES.items():
        patch = render_pod_patch(pod, SecuritySpec.from_json(spec))
        (HERE / f"{name}.json").write_text(json.dumps({"spec": spec, "pod": pod, "patch": patch}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
