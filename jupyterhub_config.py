"""The embedded hardened notebook cloud: JupyterHub + DockerSpawner on the project's podman.

Started by ``jovial-guard up`` (and the integration tests), which run OPA and the podman
service first and pass their addresses in the environment:

    JOVIAL_GUARD_OPA_URL            the managed OPA (required)
    JOVIAL_GUARD_POLICY_BUNDLE_URL  the signed bundle OPA follows, with JOVIAL_GUARD_POLICY_BUNDLE_KEY
                                    (public key file) and _KEY_ID: the hub decides spawns with its
                                    compiled policy (unset: OPA decides)
    JOVIAL_GUARD_POLICY_ENGINE      wasm (default with a bundle URL) or opa
    JOVIAL_GUARD_ENGINE_SOCKET      podman's Docker API socket (default /run/jovial-guard/podman.sock)
    JOVIAL_GUARD_HUB_STATE_DIR      hub database, secrets, logs, credentials, audit, policy store
                                    (default: STATE/hub, see jovial_guard.paths)
    JOVIAL_GUARD_BIND_URL           public URL of the proxy (default http://127.0.0.1:8000)
    JOVIAL_GUARD_HUB_PORT           hub API port (default 8081) on the egress hub address
    JOVIAL_GUARD_NETNS_PREFIX       egress namespace prefix (default jg)
    JOVIAL_GUARD_EGRESS_POOL        egress address pool (default 10.213.0.0/16)
    JOVIAL_GUARD_PROXY_API_PORT     configurable-http-proxy's API port (loopback)
    JOVIAL_GUARD_PASSWORD           shared password for users (generated and printed if unset)
    JOVIAL_GUARD_ADMIN_PASSWORD     admin password (generated if unset)
    JOVIAL_GUARD_API_TOKEN          token of an admin service (tests, scripts); none if unset
    JOVIAL_GUARD_SECCOMP_PROFILE_DIR the seccomp profiles the policy names (default profiles/seccomp)
    JOVIAL_GUARD_SECCOMP_AUDIT      1 (default, with the audit service): refused syscalls are answered
                                    by the audit service's seccomp agent and recorded; 0: EPERM only
    JOVIAL_GUARD_NAME_PREFIX        container names PREFIX-USER (default jupyter)
    JOVIAL_GUARD_HOME_VOLUME        home volume name template (default jovial-guard-home-{username})
    JOVIAL_GUARD_DECISION_LOG       JSON-lines decision log (default STATE/decisions.jsonl)
    JOVIAL_GUARD_DECISION_LISTENERS more decision listeners, "module:attr,module:attr"
    JOVIAL_GUARD_STORAGE            1 (default): per-user storage grants at spawn; 0: none
    JOVIAL_GUARD_STORAGE_ROOT       where filesets live (default: STATE/lustre-sim)
    JOVIAL_GUARD_START_SLOTS        servers starting at once (default 2 per core); later ones wait in order
    JOVIAL_GUARD_SPAWN_LIMIT        spawns pending at once, waiting ones included (default 500); more get 429
    JOVIAL_GUARD_EGRESS_SPARES      egress namespaces made ahead of spawns (default 4)
    JOVIAL_GUARD_START_TIMEOUT      seconds a spawn may take to start its container (default 120)
    JOVIAL_GUARD_HTTP_TIMEOUT       seconds a started server may take to answer (default 120)
    JOVIAL_GUARD_DECISION_DEADLINE  seconds OPA has to decide a spawn before it is refused (default 10)
    JOVIAL_GUARD_ATTEST_INTERVAL    seconds between live attestations of every server (default 5; 0: off)

Every spawn goes through jovial_guard's pre-spawn hook: the policy decides, the decision's
SecuritySpec hardens the container, and if any piece is missing the hub refuses to start
(``JovialGuard.check_startup``) or the spawn is refused. Nothing runs unhardened.
"""

import os
import secrets
import shutil
from pathlib import Path

from jovial_guard import paths
from jovial_guard.constants import DOCKER_API_VERSION
from jovial_guard.hardening.egress import DEFAULT_POOL, EgressNamespaces
from jovial_guard.policy.decision_log import DecisionLog
from jovial_guard.runtime.image import NOTEBOOK_IMAGE
from jovial_guard.spawn import (
    GuardedDockerSpawner,
    JovialGuard,
    StartupRefused,
    post_stop_hook,
    pre_spawn_hook,
)
from jovial_guard.spawn.options import options_from_form, profile_descriptions, render_options_form

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

env = os.environ.get
REPO = Path(__file__).resolve().parent
STATE = paths.hub_state_dir()
STATE.mkdir(parents=True, exist_ok=True)
os.chmod(STATE, 0o700)


def _secret(name: str, variable: str, nbytes: int = 24) -> str:
    """A password kept in the state dir (so a second start keeps the login), or from env."""
    if env(variable):
        return env(variable)
    path = STATE / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


# -- the hub and its proxy ----------------------------------------------------------------
c.JupyterHub.bind_url = env("JOVIAL_GUARD_BIND_URL", "http://127.0.0.1:8000")
netns_prefix = env("JOVIAL_GUARD_NETNS_PREFIX", "jg")
egress_pool = env("JOVIAL_GUARD_EGRESS_POOL", DEFAULT_POOL)
hub_ip = EgressNamespaces(netns_prefix, pool=egress_pool).hub_address
hub_port = int(env("JOVIAL_GUARD_HUB_PORT", "8081"))
# The hub listens only where user namespaces reach it (the hub side of their veths), and
# containers are told to connect there.
c.JupyterHub.hub_bind_url = f"http://{hub_ip}:{hub_port}"
c.JupyterHub.hub_connect_ip = hub_ip
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # Ctrl-C stops every user server
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('JOVIAL_GUARD_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.should_start = True
_chp = env("JOVIAL_GUARD_CHP") or shutil.which(
    "configurable-http-proxy", path=f"{REPO / '.tools' / 'bin'}:{os.environ.get('PATH', '')}"
)
if _chp:
    c.ConfigurableHTTPProxy.command = [_chp]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")

# -- who may log in -----------------------------------------------------------------------
ADMIN = env("JOVIAL_GUARD_ADMIN_USER", "guardadmin")
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = _secret("user-password", "JOVIAL_GUARD_PASSWORD")
c.SharedPasswordAuthenticator.admin_password = _secret("admin-password", "JOVIAL_GUARD_ADMIN_PASSWORD", 32)
c.Authenticator.admin_users = {ADMIN}
c.Authenticator.allow_all = True
# Demo groups: astro gets the observatory archive egress; large-memory the big profile.
c.JupyterHub.load_groups = {
    "astro": {"users": ["alice", "bob"]},
    "large-memory": {"users": ["alice"]},
}
_token = env("JOVIAL_GUARD_API_TOKEN")
if _token:
    c.JupyterHub.services = [{"name": "jovial-guard-admin", "api_token": _token}]
    c.JupyterHub.load_roles = [{"name": "admin", "services": ["jovial-guard-admin"]}]

# -- the spawner: DockerSpawner on the project's podman, hardened by the hook -------------
engine_socket = env("JOVIAL_GUARD_ENGINE_SOCKET", "/run/jovial-guard/podman.sock")
c.JupyterHub.spawner_class = GuardedDockerSpawner
c.DockerSpawner.client_kwargs = {"base_url": f"unix://{engine_socket}", "version": DOCKER_API_VERSION}
c.DockerSpawner.image = NOTEBOOK_IMAGE
c.DockerSpawner.allowed_images = []  # users cannot pick images; only profiles
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
NAME_PREFIX = env("JOVIAL_GUARD_NAME_PREFIX", "jupyter")
c.DockerSpawner.name_template = NAME_PREFIX + "-{username}"
c.DockerSpawner.notebook_dir = "/home/jovyan"
c.Spawner.default_url = "/lab"
# -- spawn storms (a class starting at 9:00) ----------------------------------------------
# Each notebook server needs a few CPU-seconds to start. With every spawn at once on a
# small machine they all slow each other down until the first ones pass their timeouts,
# so at most START_SLOTS servers start at a time (2 per core by default): the others wait
# in arrival order in the pre-spawn hook, and their spawn page says "waiting: N users ahead
# of you" (JovialGuard.start_slots). A slot is held until the server answers on its port.
# The hub's own concurrent_spawn_limit only bounds the queue (429 + Retry-After beyond it).
# A spawn that got a slot has the whole machine's attention, so the timeouts are per spawn,
# with headroom for a loaded host. JOVIAL_GUARD_START_SLOTS / _SPAWN_LIMIT /
# _START_TIMEOUT / _HTTP_TIMEOUT override.
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
c.JovialGuard.start_slots = int(env("JOVIAL_GUARD_START_SLOTS") or max(2, 2 * _cores))
c.JupyterHub.concurrent_spawn_limit = int(env("JOVIAL_GUARD_SPAWN_LIMIT") or 500)
c.JupyterHub.spawn_throttle_retry_range = (2, 6)
c.JovialGuard.egress_spares = int(env("JOVIAL_GUARD_EGRESS_SPARES") or 4)
c.Spawner.start_timeout = int(env("JOVIAL_GUARD_START_TIMEOUT") or 120)
c.Spawner.http_timeout = int(env("JOVIAL_GUARD_HTTP_TIMEOUT") or 120)
# The policy's answer within a spawn's budget: OPA shares the machine with the servers
# starting around it, and past this the spawn is refused (fail closed), so a storm on a
# loaded host must not turn a slow answer into a refusal. JOVIAL_GUARD_DECISION_DEADLINE.
c.JovialGuard.deadline = float(env("JOVIAL_GUARD_DECISION_DEADLINE") or 10.0)
c.Spawner.pre_spawn_hook = pre_spawn_hook
c.Spawner.post_stop_hook = post_stop_hook
c.Spawner.options_form = render_options_form(profile_descriptions(), default="default")
c.Spawner.options_from_form = options_from_form
# The profile is read by the pre-spawn hook (the policy decides it), not applied here.
c.Spawner.apply_user_options = lambda spawner, user_options: None

# -- jovial_guard ---------------------------------------------------------------------------
c.JovialGuard.opa_url = env("JOVIAL_GUARD_OPA_URL", "")
c.JovialGuard.opa_token = env("JOVIAL_GUARD_OPA_TOKEN", "")
# Spawns are decided in the hub by OPA's compiled policy of the signed bundle OPA follows
# (no HTTP round trip per spawn); JOVIAL_GUARD_POLICY_ENGINE=opa asks OPA instead.
c.JovialGuard.policy_bundle_url = env("JOVIAL_GUARD_POLICY_BUNDLE_URL", "")
c.JovialGuard.policy_bundle_public_key = env("JOVIAL_GUARD_POLICY_BUNDLE_KEY", "")
c.JovialGuard.policy_bundle_key_id = env("JOVIAL_GUARD_POLICY_BUNDLE_KEY_ID", "")
c.JovialGuard.policy_engine = env("JOVIAL_GUARD_POLICY_ENGINE") or (
    "wasm" if c.JovialGuard.policy_bundle_url else "opa"
)
c.JovialGuard.engine_socket = engine_socket
c.JovialGuard.hub_connect_ip = hub_ip
c.JovialGuard.netns_prefix = netns_prefix
c.JovialGuard.egress_pool = egress_pool
c.JovialGuard.hub_port = hub_port
c.JovialGuard.default_profile = "default"
if env("JOVIAL_GUARD_SECCOMP_PROFILE_DIR"):
    c.JovialGuard.seccomp_profile_dir = env("JOVIAL_GUARD_SECCOMP_PROFILE_DIR")
c.JovialGuard.home_volume_template = env("JOVIAL_GUARD_HOME_VOLUME", "jovial-guard-home-{username}")
# Every decision is logged with its policy revision and masked input (the input is what
# `jovial-guard policy dry-run` replays); more listeners (audit) by import path.
c.JovialGuard.decision_listeners = [
    DecisionLog(Path(env("JOVIAL_GUARD_DECISION_LOG") or STATE / "decisions.jsonl")),
    *[x for x in env("JOVIAL_GUARD_DECISION_LISTENERS", "").split(",") if x.strip()],
]

# Per-user user namespaces (jovial_guard.hardening.userns): each user's container maps its
# ids to a block of host ids of its own, from the range scripts/setup.d/10-subids.sh adds
# to /etc/subuid and /etc/subgid. JOVIAL_GUARD_USERNS=0 turns it off (containers then run
# with the host's ids: container uid 1000 is host uid 1000).
c.JovialGuard.user_namespaces = env("JOVIAL_GUARD_USERNS", "1") == "1"
if env("JOVIAL_GUARD_USERNS_STATE"):
    c.JovialGuard.userns_state_path = env("JOVIAL_GUARD_USERNS_STATE")

# Per-user storage grants (jovial_guard.credentials, docs/credentials.md): at spawn the
# policy's fileset is bind-mounted at the decision's storage.mount_path (/lustre/home ...);
# the grant is revoked at stop. JOVIAL_GUARD_STORAGE=0 turns it off.
c.JovialGuard.storage_enabled = env("JOVIAL_GUARD_STORAGE", "1") == "1"
c.StorageCredentials.state_dir = str(paths.credentials_state_dir())
c.StorageCredentials.key_dir = str(paths.credentials_key_dir())
c.StorageCredentials.agent_key_path = str(paths.credentials_agent_key())
c.StorageCredentials.storage_root = env("JOVIAL_GUARD_STORAGE_ROOT") or str(paths.storage_root())

# -- runtime audit (jovial_guard.audit, docs/audit.md) ------------------------------------
# A managed hub service: follows podman's event stream (start, die, oom, exec), takes
# Falco's http_output and the hub's own server events, records every policy decision,
# attributes all of it to hub users (the spawn registry is filled before each container
# starts), keeps the tamper-evident log in STATE/audit and runs config/audit-responses.yaml.
# It also attests every running server (every JOVIAL_GUARD_ATTEST_INTERVAL seconds and at
# each start) against the hardening record the spawn registered.
# JOVIAL_GUARD_AUDIT=0 turns it off; JOVIAL_GUARD_AUDIT_PORT pins its port.
AUDIT = "jovial-guard-audit"
if env("JOVIAL_GUARD_AUDIT", "1") == "1":
    import sys as _sys

    from jovial_guard.audit.decisions import AuditDecisionListener, HttpSink
    from jovial_guard.audit.hub_registry import SpawnRegistrar
    from jovial_guard.audit.sources import HubEventForwarder
    from jovial_guard.policy.opa_process import free_loopback_port

    _audit_dir = Path(env("JOVIAL_GUARD_AUDIT_DIR") or STATE / "audit")
    _audit_dir.mkdir(parents=True, exist_ok=True)
    _audit_url = f"http://127.0.0.1:{int(env('JOVIAL_GUARD_AUDIT_PORT') or free_loopback_port())}"
    c.JupyterHub.services.append({
        "name": AUDIT,
        "url": _audit_url,
        "command": [
            _sys.executable, "-m", "jovial_guard", "audit", "serve",
            "--dir", str(_audit_dir),
            "--listen", _audit_url.removeprefix("http://"),
            "--engine-url", f"unix://{engine_socket}",
            "--hub-api-url", c.JupyterHub.bind_url.rstrip("/") + "/hub/api",
            "--rules", str(Path(__file__).resolve().parent / "config" / "audit-responses.yaml"),
            "--credentials-state", str(paths.credentials_state_dir()),
            "--credentials-keys", str(paths.credentials_key_dir()),
            *(["--seccomp-socket", str(paths.seccomp_agent_socket())]
              if env("JOVIAL_GUARD_SECCOMP_AUDIT", "1") == "1" else []),
            "--attest-interval", env("JOVIAL_GUARD_ATTEST_INTERVAL") or "5",
        ],
        "environment": {k: v for k, v in os.environ.items() if k.startswith("JOVIAL_GUARD_") or k in ("PATH", "HOME")},
    })
    # Stop servers (responses) and read spawner state (attribution); nothing else.
    c.JupyterHub.load_roles.append(
        {"name": AUDIT, "services": [AUDIT],
         "scopes": ["list:users", "read:users", "admin:servers", "admin:server_state"]}
    )
    # Refused syscalls: the audit service's seccomp agent answers them (EPERM) and records
    # each, attributed to the user; spawns wait for (and are refused without) the agent.
    if env("JOVIAL_GUARD_SECCOMP_AUDIT", "1") == "1":
        c.JovialGuard.seccomp_agent_socket = str(paths.seccomp_agent_socket())
    c.JovialGuard.spawn_listeners.append(SpawnRegistrar(_audit_dir / "spawns.sqlite"))
    c.JovialGuard.decision_listeners.append(AuditDecisionListener(HttpSink(_audit_url)))
    c.EventLogger.handlers = [HubEventForwarder(_audit_url)]

# -- the security admins' dashboard (jovial_guard.dashboard, docs/admin.md) -----------------
# A managed hub service on loopback behind hub OAuth, for admins only. The spawn listener
# keeps each admitted server's hardening record (STATE/hardening) where the dashboard reads
# it. JOVIAL_GUARD_DASHBOARD=0 turns it off; JOVIAL_GUARD_DASHBOARD_PORT pins its port.
DASHBOARD = "jovial-guard-dashboard"
if env("JOVIAL_GUARD_DASHBOARD", "1") == "1":
    import sys as _sys

    from jovial_guard.dashboard.recorder import hardening_recorder
    from jovial_guard.policy.opa_process import free_loopback_port

    c.JovialGuard.spawn_listeners.append(hardening_recorder(STATE / "hardening"))
    _dashboard_env = {
        paths.HUB_STATE_ENV: str(STATE),
        "JOVIAL_GUARD_NETNS_PREFIX": netns_prefix,
        "JOVIAL_GUARD_EGRESS_POOL": egress_pool,
        "JOVIAL_GUARD_CREDENTIALS_DIR": str(paths.credentials_state_dir()),
        # where `jovial-guard audit serve --dir` keeps its log (docs/audit.md)
        "JOVIAL_GUARD_AUDIT_DIR": env("JOVIAL_GUARD_AUDIT_DIR") or str(STATE / "audit"),
    }
    for _name in ("JOVIAL_GUARD_OPA", "JOVIAL_GUARD_CACHE"):
        if env(_name):
            _dashboard_env[_name] = env(_name)
    c.JupyterHub.services.append({
        "name": DASHBOARD,
        "display": True,
        "url": f"http://127.0.0.1:{int(env('JOVIAL_GUARD_DASHBOARD_PORT') or free_loopback_port())}",
        "command": [_sys.executable, "-m", "jovial_guard.dashboard"],
        "cwd": str(STATE),
        "environment": _dashboard_env,
        "oauth_no_confirm": True,
    })
    c.JupyterHub.load_roles.append(
        {"name": "jovial-guard-dashboard", "services": [DASHBOARD],
         "scopes": ["list:users", "read:users", "read:servers"]}
    )
    # Only admins may open it (admins hold every scope anyway; stated for the record).
    # The service refuses any non-admin that gets through, too.
    c.JupyterHub.load_roles.append(
        {"name": "jovial-guard-dashboard-admins", "users": [ADMIN],
         "scopes": [f"access:services!service={DASHBOARD}"]}
    )

# Refuse to start when a piece of the hardening is missing (OPA, profiles, engine socket).
try:
    JovialGuard.instance(config=c).check_startup()
except StartupRefused as exc:
    import sys

    print(f"\n{exc}\n", file=sys.stderr, flush=True)
    raise SystemExit(3) from None
