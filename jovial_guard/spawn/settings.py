"""The ``c.JovialGuard.*`` settings: every option with its type, safe default and help.

Kept apart from the hook's logic (:mod:`.guard`) so each module stays one concern; the
options are configured on :class:`~.guard.JovialGuard`, which inherits them.
"""

from __future__ import annotations

from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Integer, List, Unicode, default, validate
from traitlets.config import SingletonConfigurable

from ..hardening import apparmor, seccomp
from ..hardening.egress import DEFAULT_POOL, EgressNamespaces


class GuardSettings(SingletonConfigurable):
    """The settings of :class:`~.guard.JovialGuard` (configured as ``c.JovialGuard.*``)."""

    opa_url = Unicode(
        "",
        config=True,
        help="""URL of the OPA that decides spawns, e.g. ``http://127.0.0.1:8181``.
        Required: with no OPA the hub refuses to start (fail closed).""",
    )
    opa_token = Unicode(
        "", config=True, help="Bearer token for OPA's API (empty: none). Example: ``s3cret``."
    )
    opa_ca_file = Unicode(
        "", config=True,
        help="CA bundle to trust for an https OPA (empty: the system store).",
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
    seccomp_profile_path = Unicode(
        config=True,
        help="""The notebook seccomp profile file handed to the engine
        (``security_opt=seccomp=<path>``). Default: the repository's
        ``profiles/seccomp/notebook.json``. Missing or weak: start-up and spawns refuse.""",
    )

    @default("seccomp_profile_path")
    def _default_seccomp(self) -> str:
        return str(seccomp.notebook_profile_path())

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
    storage_enabled = Bool(
        False, config=True,
        help="""Give each user a storage grant at spawn (``jovial_guard.credentials``,
        configured by ``c.StorageCredentials.*``): the policy's fileset appears at the
        decision's ``storage.mount_path`` and the grant is revoked at stop. Off by default;
        the embedded ``jupyterhub_config.py`` turns it on. A grant that cannot be issued or
        mounted refuses the spawn.""",
    )
