"""Conformance with Kubernetes Pod Security, policy version v1.37, from upstream's own data.

Every fixture pod of k8s.io/pod-security-admission v0.37.2 (``tests/vectors/pod-security``)
is decided by the project's Rego in a real OPA, as a platform pod created through
admission. The table below maps each upstream check to the project's rule ids and says
whether the project may fix the omission by mutation instead of denying:

* a ``restricted`` pass fixture must raise no ``pod-security/*`` reason;
* a ``restricted`` or ``baseline`` fail fixture must be denied with one of the check's
  rules, or, for a check whose failure is a missing field, be admitted with a patch after
  which nothing is left to patch.

Baseline pass fixtures are not required to pass: every pod here gets "restricted".
The fixtures' images are untagged (``registry.k8s.io/pause``); they are pinned to a tag
before deciding so the image rules stay out of the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from jovial_guard.hardening.render_pod import render_pod_patch
from jovial_guard.normalize import workload_from_object
from jovial_guard.policy.engine import PolicyEngine

from tests.conftest import VECTORS

ROOT = VECTORS / "pod-security" / "v1.37"
MUTATE = "mutate"

#: upstream check id (fixture file prefix) -> project rule ids, plus MUTATE when the
#: failure can be an omission the patch fills in.
CHECKS: dict[str, set[str]] = {
    "allowprivilegeescalation": {"pod-security/privilege-escalation", MUTATE},
    "apparmorprofile": {"pod-security/apparmor"},
    "capabilities_baseline": {"pod-security/capabilities"},
    "capabilities_restricted": {"pod-security/capabilities", MUTATE},
    "hostnamespaces": {"pod-security/host-namespaces"},
    "hostpathvolumes": {"pod-security/host-path"},
    "hostports": {"pod-security/host-ports"},
    "hostprobesandhostlifecycle": {"pod-security/probe-host"},
    "privileged": {"pod-security/privileged"},
    "procmount": {"pod-security/proc-mount"},
    "procmount_restricted": {"pod-security/proc-mount"},
    "restrictedvolumes": {"pod-security/volume-types", "pod-security/host-path"},
    "runasnonroot": {"pod-security/run-as-root", MUTATE},
    "runasuser": {"pod-security/run-as-root"},
    "seccompprofile_baseline": {"pod-security/seccomp"},
    "seccompprofile_restricted": {"pod-security/seccomp", MUTATE},
    "selinuxoptions": {"pod-security/selinux"},
    "sysctls": {"pod-security/sysctls"},
    "windowshostprocess": {"pod-security/host-process"},
}


def check_of(path: Path) -> str:
    return path.stem.rstrip("0123456789")


def fixtures(level: str, outcome: str) -> list[Any]:
    return [pytest.param(p, id=f"{level}/{outcome}/{p.stem}") for p in sorted((ROOT / level / outcome).glob("*.yaml"))]


def load(path: Path) -> dict[str, Any]:
    pod: dict[str, Any] = yaml.safe_load(path.read_text())
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod["spec"].get(kind) or []:
            if container.get("image") == "registry.k8s.io/pause":
                container["image"] = "registry.k8s.io/pause:3.10.2"
    return pod


async def decide(engine: PolicyEngine, pod: dict[str, Any]) -> Any:
    workload = workload_from_object(pod, origin="admission", namespace="jhub", request_user="system:serviceaccount:jhub:default")
    return workload, await engine.decide(workload)


def test_every_upstream_check_is_in_the_table() -> None:
    seen = {check_of(p) for p in ROOT.glob("*/*/*.yaml")} - {"base", "base_linux", "base_windows"}
    assert seen == set(CHECKS), seen ^ set(CHECKS)


@pytest.mark.parametrize("path", fixtures("restricted", "pass"))
async def test_restricted_pass_fixture_passes(engine: PolicyEngine, path: Path) -> None:
    _, decision = await decide(engine, load(path))
    assert decision.allowed, decision.message()


@pytest.mark.parametrize("path", fixtures("restricted", "fail") + fixtures("baseline", "fail"))
async def test_fail_fixture_is_denied_or_fixed(engine: PolicyEngine, path: Path) -> None:
    expected = CHECKS[check_of(path)]
    pod = load(path)
    workload, decision = await decide(engine, pod)
    if not decision.allowed:
        rules = {r.rule for r in decision.reasons}
        assert rules & expected, f"{path.name}: denied by {rules}, expected one of {expected}"
        assert all(r.startswith("pod-security/") for r in rules), rules
        return
    assert MUTATE in expected, f"{path.name} was admitted, but upstream's check {check_of(path)} cannot be fixed by mutation"
    ops = render_pod_patch(workload.pod, decision.spec)
    assert ops, f"{path.name} was admitted unchanged"
    patched = jsonpatch.apply_patch(pod, ops)
    workload2, again = await decide(engine, patched)
    assert again.allowed and render_pod_patch(workload2.pod, again.spec) == []


@pytest.mark.parametrize("sysctl", ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"])
async def test_sysctls_added_since_v1_32_are_safe(engine: PolicyEngine, sysctl: str) -> None:
    pod = load(ROOT / "restricted" / "pass" / "base.yaml")
    pod["spec"]["securityContext"]["sysctls"] = [{"name": sysctl, "value": "1"}]
    _, decision = await decide(engine, pod)
    assert decision.allowed, decision.message()


@pytest.mark.parametrize("field, value", [("runAsUser", 0), ("runAsNonRoot", False)])
async def test_host_users_false_relaxes_root_checks(engine: PolicyEngine, field: str, value: Any) -> None:
    """v1.35+: runAsNonRoot and runAsUser are not enforced for pods in a user namespace."""
    pod = load(ROOT / "restricted" / "pass" / "base.yaml")
    pod["spec"]["containers"][0]["securityContext"][field] = value
    _, denied = await decide(engine, pod)
    assert not denied.allowed and {r.rule for r in denied.reasons} == {"pod-security/run-as-root"}
    pod["spec"]["hostUsers"] = False
    _, allowed = await decide(engine, pod)
    assert allowed.allowed, allowed.message()


async def test_image_volume_and_empty_apparmor_value(engine: PolicyEngine) -> None:
    pod = load(ROOT / "restricted" / "pass" / "base.yaml")
    pod["spec"]["volumes"] = [{"name": "model", "image": {"reference": "quay.io/jupyter/models:1", "pullPolicy": "IfNotPresent"}}]
    pod["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/container1": ""}
    _, decision = await decide(engine, pod)
    assert decision.allowed, decision.message()
