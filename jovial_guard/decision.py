"""`Decision` and `SecuritySpec`: what OPA answers, in one typed vocabulary.

A Decision comes only from OPA. Python constructs exactly one kind of decision itself,
:meth:`Decision.deny`, for fail-closed paths (OPA down, deadline, malformed answer): it
never invents an allow. The SecuritySpec is what the workload must look like; renderers in
:mod:`jovial_guard.hardening` turn it into a Docker ``host_config`` or a Pod patch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedDecision

#: Rule id of every fail-closed denial made in Python.
ENGINE_UNAVAILABLE = "policy-engine-unavailable"
#: Rule id for input that cannot be decided at all.
MALFORMED_INPUT = "malformed-input"
#: Enforcement modes a violation can act in (policies/enforcement), and "none" for a
#: decision nothing was violated in.
MODES = ("enforce", "warn", "audit", "none")


@dataclass(frozen=True)
class Reason:
    """Why a decision went the way it did: a stable rule id and a sentence for a human."""

    rule: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class ProfileRef:
    """A seccomp or AppArmor profile: ``RuntimeDefault`` or ``Localhost`` plus a name."""

    type: str
    localhost_profile: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.localhost_profile:
            out["localhostProfile"] = self.localhost_profile
        return out


@dataclass(frozen=True)
class Resources:
    """Kubernetes quantities as strings (``"2Gi"``, ``"500m"``); renderers convert."""

    cpu_limit: str
    memory_limit: str
    cpu_request: str
    memory_request: str
    gpu: int = 0
    pids_limit: int = 512


@dataclass(frozen=True)
class EgressRule:
    """One allowed destination: a CIDR, optional ports, a protocol and why it is allowed."""

    cidr: str
    ports: tuple[int, ...] = ()
    protocol: str = "tcp"
    comment: str = ""


@dataclass(frozen=True)
class Egress:
    """Default-deny egress with explicit allows; ``blocked`` are never reachable."""

    allow: tuple[EgressRule, ...] = ()
    dns: tuple[str, ...] = ()
    hub: tuple[EgressRule, ...] = ()
    blocked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Storage:
    """The user's share of the shared file system, as policy decided it."""

    fileset: str
    mode: str
    mount_path: str
    #: On Kubernetes, the node agent's staging directory of this user on the node
    #: (``settings.node.staging_root``/user): the pod mounts it read-only at the mount
    #: path's parent and the agent's mount of the fileset propagates into it.
    node_stage: str | None = None


@dataclass(frozen=True)
class Exemption:
    """A rule an exemption in the policy data lifted for this workload, and why."""

    id: str
    rule: str
    reason: str
    expires: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule, "reason": self.reason, "expires": self.expires}


@dataclass(frozen=True)
class SecuritySpec:
    """What an admitted workload must look like, whichever engine runs it."""

    profile: str
    notebook: bool
    uid: int
    gid: int
    fs_group: int
    read_only_root: bool
    writable_paths: tuple[str, ...]
    capabilities_drop: tuple[str, ...]
    capabilities_add: tuple[str, ...]
    no_new_privileges: bool
    seccomp: ProfileRef
    apparmor: ProfileRef
    resources: Resources
    egress: Egress
    storage: Storage | None = None
    #: Pod labels the policy renders (e.g. the egress group labels), and the prefix it
    #: owns: labels under it that are not in ``pod_labels`` are removed.
    pod_labels: tuple[tuple[str, str], ...] = ()
    managed_label_prefix: str = ""
    #: Node labels a pod must be scheduled by (a Kubernetes ``nodeSelector``): for notebooks
    #: under a Localhost profile, the label the node agent sets once the profile is installed.
    node_selector: tuple[tuple[str, str], ...] = ()
    #: Kubernetes ``hostUsers``: False puts the pod in a user namespace of its own (set for
    #: notebooks when ``settings.node.user_namespaces`` says the nodes support it); None
    #: leaves the pod's choice alone.
    host_users: bool | None = None

    @classmethod
    def from_json(cls, doc: Any) -> SecuritySpec:
        """Parse the ``spec`` document of OPA's decision; anything odd is MalformedDecision."""
        try:
            res = doc["resources"]
            egress = doc["egress"]
            storage = doc.get("storage")
            return cls(
                profile=str(doc["profile"]),
                notebook=bool(doc["notebook"]),
                uid=_int(doc["uid"]),
                gid=_int(doc["gid"]),
                fs_group=_int(doc["fs_group"]),
                read_only_root=bool(doc["read_only_root"]),
                writable_paths=tuple(str(p) for p in doc["writable_paths"]),
                capabilities_drop=tuple(str(c) for c in doc["capabilities"]["drop"]),
                capabilities_add=tuple(str(c) for c in doc["capabilities"]["add"]),
                no_new_privileges=bool(doc["no_new_privileges"]),
                seccomp=_profile(doc["seccomp"]),
                apparmor=_profile(doc["apparmor"]),
                resources=Resources(
                    cpu_limit=str(res["cpu_limit"]),
                    memory_limit=str(res["memory_limit"]),
                    cpu_request=str(res["cpu_request"]),
                    memory_request=str(res["memory_request"]),
                    gpu=_int(res.get("gpu", 0)),
                    pids_limit=_int(res.get("pids_limit", 512)),
                ),
                egress=Egress(
                    allow=tuple(_egress_rule(r) for r in egress.get("allow", [])),
                    dns=tuple(str(d) for d in egress.get("dns", [])),
                    hub=tuple(_egress_rule(r) for r in egress.get("hub", [])),
                    blocked=tuple(str(b) for b in egress.get("blocked", [])),
                ),
                storage=(
                    Storage(
                        fileset=str(storage["fileset"]),
                        mode=str(storage["mode"]),
                        mount_path=str(storage["mount_path"]),
                        node_stage=str(storage["node_stage"]) if storage.get("node_stage") else None,
                    )
                    if storage
                    else None
                ),
                pod_labels=tuple(sorted((str(k), str(v)) for k, v in doc.get("labels", {}).get("set", {}).items())),
                managed_label_prefix=str(doc.get("labels", {}).get("managed_prefix", "")),
                node_selector=_node_selector(doc.get("node_selector") or {}),
                host_users=_optional_bool(doc.get("host_users"), "host_users"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedDecision(f"security spec from OPA is malformed: {exc!r}") from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _optional_bool(value: Any, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true, false or null, got {value!r}")
    return value


def _node_selector(doc: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise ValueError(f"node_selector must map label keys to string values, got {doc!r}")
    return tuple(sorted(doc.items()))


def _profile(doc: Any) -> ProfileRef:
    kind = str(doc["type"])
    if kind not in ("RuntimeDefault", "Localhost"):
        raise ValueError(f"profile type {kind!r} is neither RuntimeDefault nor Localhost")
    name = doc.get("localhostProfile")
    if kind == "Localhost" and not name:
        raise ValueError("Localhost profile without localhostProfile")
    return ProfileRef(type=kind, localhost_profile=str(name) if name else None)


def _egress_rule(doc: Any) -> EgressRule:
    return EgressRule(
        cidr=str(doc["cidr"]),
        ports=tuple(_int(p) for p in doc.get("ports", [])),
        protocol=str(doc.get("protocol", "tcp")),
        comment=str(doc.get("comment", "")),
    )


@dataclass(frozen=True)
class Decision:
    """OPA's answer for one workload."""

    allowed: bool
    reasons: tuple[Reason, ...]
    spec: SecuritySpec | None
    policy_revision: str
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    warnings: tuple[str, ...] = ()
    #: Exemptions (policy data) that lifted a rule for this workload.
    exemptions: tuple[Exemption, ...] = ()
    #: How the workload was decided: "notebook" or "platform" ("" when not decided).
    scope: str = ""
    #: The strictest enforcement mode a violation acted in: "enforce" (denied, and every
    #: fail-closed denial), "warn", "audit", or "none" when nothing was violated.
    mode: str = "none"
    #: Violations of rules in warn mode (admitted, shown) and audit mode (admitted, recorded).
    warned: tuple[Reason, ...] = ()
    audited: tuple[Reason, ...] = ()

    @classmethod
    def deny(cls, rule: str, message: str, *, policy_revision: str = "unknown") -> Decision:
        """The only decision Python may make on its own: a fail-closed denial."""
        return cls(
            allowed=False,
            reasons=(Reason(rule=rule, message=message),),
            spec=None,
            policy_revision=policy_revision,
            mode="enforce",
        )

    @classmethod
    def from_opa(cls, result: Any) -> Decision:
        """Parse ``data.jovial_guard.main.decision``; raise MalformedDecision on anything odd.

        An allow must carry a valid spec: an allow we cannot harden is not an allow.
        """
        if not isinstance(result, dict):
            raise MalformedDecision(f"decision is not an object: {type(result).__name__}")
        allowed = result.get("allowed")
        if not isinstance(allowed, bool):
            raise MalformedDecision("decision has no boolean 'allowed'")
        raw_reasons = result.get("reasons", [])
        if not isinstance(raw_reasons, list):
            raise MalformedDecision("decision 'reasons' is not a list")
        reasons = _reasons(raw_reasons, "reasons")
        warned = _reasons(result.get("warned", []), "warned")
        audited = _reasons(result.get("audited", []), "audited")
        mode = result.get("mode", "enforce" if not allowed else "none")
        if mode not in MODES or (not allowed and mode != "enforce"):
            # A denial always acts in enforce mode; anything else is a policy bug.
            raise MalformedDecision(f"decision mode {mode!r} is not one of {', '.join(MODES)} or contradicts 'allowed'")
        if not allowed and not reasons:
            reasons = (Reason(rule="denied", message="The policy denied this workload."),)
        if allowed and not isinstance(result.get("spec"), dict):
            raise MalformedDecision("decision allows but carries no security spec")
        spec = SecuritySpec.from_json(result["spec"]) if allowed else None
        if allowed and reasons:
            raise MalformedDecision("decision allows and gives denial reasons at once")
        warnings = result.get("warnings", [])
        try:
            exemptions = tuple(
                Exemption(id=str(e["id"]), rule=str(e["rule"]), reason=str(e["reason"]),
                          expires=str(e["expires"]) if e.get("expires") else None)
                for e in result.get("exemptions", [])
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedDecision(f"decision exemption is malformed: {exc!r}") from exc
        return cls(
            allowed=allowed,
            reasons=reasons,
            spec=spec,
            policy_revision=str(result.get("revision", "unknown")),
            warnings=tuple(sorted(str(w) for w in warnings)) if isinstance(warnings, list) else (),
            exemptions=exemptions,
            scope=str(result.get("scope", "")),
            mode=str(mode),
            warned=warned,
            audited=audited,
        )

    def violations(self) -> tuple[tuple[str, Reason], ...]:
        """Every violation that acted, with its mode: enforced, warned, audited."""
        return (
            tuple(("enforce", r) for r in self.reasons)
            + tuple(("warn", r) for r in self.warned)
            + tuple(("audit", r) for r in self.audited)
        )

    def message(self) -> str:
        """All reasons as one readable paragraph (the spawn page, the API error)."""
        return " ".join(f"[{r.rule}] {r.message}" for r in self.reasons)


def _reasons(raw: Any, name: str) -> tuple[Reason, ...]:
    """A list of {rule, message} from OPA, sorted; MalformedDecision otherwise."""
    if not isinstance(raw, list):
        raise MalformedDecision(f"decision {name!r} is not a list")
    try:
        return tuple(
            sorted(
                (Reason(rule=str(r["rule"]), message=str(r["message"])) for r in raw),
                key=lambda r: (r.rule, r.message),
            )
        )
    except (KeyError, TypeError) as exc:
        raise MalformedDecision(f"decision {name} entry is malformed: {exc!r}") from exc
