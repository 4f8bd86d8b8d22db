"""The ``c.JovialGuard.*`` settings: every option with its type, safe default and help.

Kept apart from the hook's logic (:mod:`.guard`) so each module stays one concern; the
options are configured on :class:`~.guard.JovialGuard`, which inherits them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Float, Integer, List, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from .. import paths
from ..hardening import apparmor, seccomp
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces


class GuardSettings(SingletonConfigurable):
    """The settings of :class:`~.guard.JovialGuard` (configured as ``c.JovialGuard.*``)."""

    opa_url = Unicode(
        "",
        config=True,
        help="""URL of the OPA that decides spawns, e.g. ``http://127.0.0.1:8181``.
        Required with ``policy_engine = "opa"``: with no OPA the hub refuses to start
        (fail closed).""",
    )
    opa_token = Unicode(
        "", config=True, help="Bearer token for OPA's API (empty: none). Example: ``s3cret``."
    )
    opa_ca_file = Unicode(
        "", config=True,
        help="CA bundle to trust for an https OPA (empty: the system store).",
    )
    policy_engine = CaselessStrEnum(
        ["opa", "wasm"], default_value="opa", config=True,
        help="""Who decides spawns. ``opa``: the OPA at ``opa_url``, over HTTP. ``wasm``:
        OPA's compiled policy in the hub's own process, from the signed bundle at
        ``policy_bundle_url`` (verified with ``policy_bundle_public_key`` and
        ``policy_bundle_key_id`` as OPA verifies it; the hub reports the revision it
        decides with to that bundle service, so ``jovial-guard policy deploy`` waits for
        the hub). No HTTP round trip per spawn; until a verified bundle is loaded every
        spawn is refused.""",
    )
    policy_bundle_url = Unicode(
        "", config=True,
        help="""With ``policy_engine = "wasm"``: the signed bundle, an http(s) URL of the
        bundle service (``.../bundles/jovial_guard.tar.gz``) or a file path.""",
    )
    policy_bundle_public_key = Unicode(
        "", config=True, help="With ``policy_engine = \"wasm\"``: PEM public key the bundle is signed with.",
    )
    policy_bundle_key_id = Unicode(
        "", config=True, help="With ``policy_engine = \"wasm\"``: the key id the bundle's signature must name.",
    )
    policy_bundle_poll = Float(
        1.0, config=True,
        help="Seconds between looks at ``policy_bundle_url`` for a new revision (``wasm``).",
    )
    deadline = Float(
        2.0, config=True,
        help="Seconds OPA has to answer one spawn; later counts as a denial. Default 2.0.",
    )

    @validate("deadline")
    def _deadline_positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise ValueError("JovialGuard.deadline must be positive seconds, e.g. 2.0")
        return value

    default_profile = Unicode(
        "default", config=True,
        help="Profile used when the user chose none (``default``, ``large-memory``, ``gpu``).",
    )
    seccomp_profile_dir = Unicode(
        config=True,
        help="""Directory of the seccomp profiles the policy chooses from: the decision's
        ``jovial-guard/<name>.json`` is ``<dir>/<name>.json``, handed to the engine as
        ``security_opt=seccomp=<file>``. Default: the repository's ``profiles/seccomp``
        (the files the node agent installs on Kubernetes). Start-up refuses an empty
        directory or a weak profile; a spawn whose profile is missing is refused.""",
    )

    @default("seccomp_profile_dir")
    def _default_seccomp(self) -> str:
        return str(seccomp.notebook_profile_path().parent)

    seccomp_agent_socket = Unicode(
        "", config=True,
        help="""Unix socket of the seccomp audit agent (``jovial-guard audit serve
        --seccomp-socket``). When set, each container gets its profile with every EPERM
        refusal routed to the agent, which answers EPERM and records the call in the audit
        log, attributed to the user; a container cannot start while the agent is not
        listening. Empty (default): refusals are EPERM with no audit event.""",
    )
    seccomp_agent_wait = Float(
        15.0, config=True,
        help="""Seconds a spawn waits for the seccomp agent's socket to appear (the audit
        service starts with the hub) before it is refused. Default 15.""",
    )
    seccomp_audited_dir = Unicode(
        config=True,
        help="""Where the audited variants of the profiles are written (content-addressed,
        rebuildable). Default: ``seccomp-audited`` beside ``seccomp_agent_socket``.""",
    )

    @default("seccomp_audited_dir")
    def _default_seccomp_audited_dir(self) -> str:
        if not self.seccomp_agent_socket:
            return ""
        return str(Path(self.seccomp_agent_socket).parent / "seccomp-audited")

    apparmor_profile_path = Unicode(
        config=True,
        help="""The notebook AppArmor profile file; validated with apparmor_parser at
        start-up (a profile that does not compile stops the hub). Applied only where the
        kernel has AppArmor; elsewhere each spawn records it as unsupported.""",
    )

    @default("apparmor_profile_path")
    def _default_apparmor(self) -> str:
        return str(apparmor.notebook_profile_path())

    apparmor_supported = Bool(
        config=True,
        help="Whether the host enforces AppArmor. Default: asked from the kernel.",
    )

    @default("apparmor_supported")
    def _default_apparmor_supported(self) -> bool:
        return apparmor.host_supports_apparmor().supported

    engine_socket = Unicode(
        "/run/jovial-guard/podman.sock", config=True,
        help="""Unix socket of the container engine's Docker API (the project's podman
        service). Checked at start-up: missing means the hub refuses to start.""",
    )
    egress = Bool(
        True, config=True,
        help="""Give each user container its own network namespace with nftables egress
        rules from the decision. Turning it off gives containers no network at all
        (``network_mode=none``), never an unfiltered one.""",
    )
    netns_prefix = Unicode(
        "jg", config=True,
        help="""Prefix of the project's network namespaces (``jg-egress``, ``jg-u-alice-...``).
        A second hub on the same machine needs its own prefix and ``egress_pool``.""",
    )
    egress_pool = Unicode(
        DEFAULT_POOL, config=True,
        help="IPv4 range (/20 or larger) for the egress namespaces. Default 10.213.0.0/16.",
    )
    egress_spares = Integer(
        4, config=True,
        help="""Egress namespaces kept made ahead of spawns (linked to the router, no routes,
        no rules, nothing running), so a spawn only names one and loads its rules. A spawn
        that finds none makes its own. 0: none. Default 4.""",
    )
    start_slots = Integer(
        0, config=True,
        help="""Servers starting at once; later spawns wait in arrival order inside the
        pre-spawn hook and their spawn page says how many users are ahead of them. A slot is
        held until the server answers on its port. 0 (default): no queue. The embedded
        ``jupyterhub_config.py`` sets 2 per core.""",
    )

    @validate("egress_spares", "start_slots")
    def _not_negative(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise ValueError(f"JovialGuard.{proposal['trait'].name} must be 0 or more, e.g. 4")
        return value

    hub_connect_ip = Unicode(
        config=True,
        help="""Address user containers reach the hub API on: the hub side of the egress
        router link (the last /30 of ``egress_pool``, e.g. 10.213.255.253). The hub must
        listen there (``c.JupyterHub.hub_bind_url``).""",
    )

    @default("hub_connect_ip")
    def _default_hub_connect_ip(self) -> str:
        return EgressNamespaces(self.netns_prefix, pool=self.egress_pool).hub_address
    hub_port = Integer(
        8081, config=True, help="Port of the hub API user containers may reach. Default 8081.",
    )
    home_volume_template = Unicode(
        "jovial-guard-home-{username}", config=True,
        help="Name of each user's home volume; ``{username}`` is the escaped user name.",
    )
    tmpfs_size = Unicode("512m", config=True, help="Size of each writable tmpfs, e.g. ``512m``.")
    decision_listeners = List(
        AnyTrait(), config=True,
        help="""Callables ``(workload, decision, seconds)`` (or ``"module:attr"`` strings)
        told about every spawn decision: decision log, audit, metrics. Must not raise.""",
    )
    spawn_listeners = List(
        AnyTrait(), config=True,
        help="""Callables ``(spawner, record)`` told about every admitted spawn with the
        hardening record (what was applied, what the host cannot do).""",
    )
    user_namespaces = Bool(
        False, config=True,
        help="""Run each user's container in a user namespace of its own: container ids
        0..65535 map to a block of host ids given to that user for good (recorded in
        ``userns_state_path``), from the range of the ``jovial-guard`` account in
        /etc/subuid and /etc/subgid (``scripts/setup.d/10-subids.sh`` adds it). With it,
        container uid 1000 is a different host uid per user, owned by no host account.
        Off by default (the host's ids); the embedded ``jupyterhub_config.py`` turns it on.
        When on and the range is missing, spawns are refused, never run on host ids.""",
    )
    userns_state_path = Unicode(
        config=True,
        help="""The allocation file of users' id blocks (state: users' files are owned by
        those ids). Default ``STATE/engine/userns.json``, beside the engine storage.""",
    )

    @default("userns_state_path")
    def _default_userns_state(self) -> str:
        return str(paths.userns_state())

    storage_enabled = Bool(
        False, config=True,
        help="""Give each user a storage grant at spawn (``jovial_guard.credentials``,
        configured by ``c.StorageCredentials.*``): the policy's fileset appears at the
        decision's ``storage.mount_path`` and the grant is revoked at stop. Off by default;
        the embedded ``jupyterhub_config.py`` turns it on. A grant that cannot be issued or
        mounted refuses the spawn.""",
    )
