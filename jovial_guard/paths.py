"""Where jovial_guard keeps things: cache (rebuildable) apart from state (backed up).

Cache holds what a rerun of set-up can make again: the OPA binary, venvs, the notebook
image tarball, built Kubernetes tools. Deleting it costs a rebuild, nothing else.

State holds what cannot be made again: credential key-encryption keys and grants, the audit
signing key and log, the policy store and its history, the hub database, the decision log,
users' home volumes (in the engine's storage). Losing it loses data, so it never lives
under ``~/.cache``.

Every module asks here; nothing else computes these paths.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "JOVIAL_GUARD_CACHE"
STATE_ENV = "JOVIAL_GUARD_STATE_DIR"
#: One hub's own directory; set by ``jovial-guard up`` for the hub and its services, and by
#: tests that run a second hub. Unset, it is ``state_dir()/hub``.
HUB_STATE_ENV = "JOVIAL_GUARD_HUB_STATE_DIR"
SYSTEM_STATE_DIR = Path("/var/lib/jovial-guard")


def cache_dir() -> Path:
    """``$JOVIAL_GUARD_CACHE``, default ``~/.cache/jovial_guard``: safe to delete."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "jovial_guard")


def state_dir() -> Path:
    """``$JOVIAL_GUARD_STATE_DIR``; else ``/var/lib/jovial-guard`` for root, else
    ``$XDG_STATE_HOME/jovial-guard`` (``~/.local/state/jovial-guard``): back it up."""
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "jovial-guard" if xdg else Path.home() / ".local" / "state" / "jovial-guard"


def hub_state_dir() -> Path:
    """The embedded hub's state: database, secrets, policy store, decision log, audit log,
    credentials. One directory so one backup covers the hub. ``$JOVIAL_GUARD_HUB_STATE_DIR``
    names it directly (the stack passes it to the hub and its services)."""
    explicit = os.environ.get(HUB_STATE_ENV)
    return Path(explicit) if explicit else state_dir() / "hub"


def credentials_state_dir() -> Path:
    """Issued grants (envelopes only) and the revocation list."""
    return hub_state_dir() / "credentials"


def credentials_key_dir() -> Path:
    """Key-encryption keys and the issuer's signing key, apart from the grants."""
    return hub_state_dir() / "credentials-keys"


def credentials_agent_key() -> Path:
    """The node agent's X25519 private key."""
    return hub_state_dir() / "credentials-agent" / "agent.key"


def storage_root() -> Path:
    """Where the simulated Lustre filesets live when no real mount is configured (users'
    files, so state)."""
    return state_dir() / "lustre-sim"


def engine_root() -> Path:
    """The project's container engine storage (images and users' home volumes)."""
    return state_dir() / "engine"


#: Run-time sockets and files (tmpfs): gone at reboot, remade at start.
RUN_DIR = Path("/run/jovial-guard")


def seccomp_agent_socket() -> Path:
    """The hub's seccomp agent socket: one per hub state directory, under ``RUN_DIR`` (a
    unix socket path must stay short), so two hubs on one machine never share an agent."""
    import hashlib

    tag = hashlib.sha256(str(hub_state_dir().resolve()).encode()).hexdigest()[:12]
    return RUN_DIR / f"seccomp-agent-{tag}.sock"


def userns_state() -> Path:
    """Which block of host ids each user's containers map to: state, because users' home
    volumes and files are owned by those ids (see :mod:`jovial_guard.hardening.userns`)."""
    return engine_root() / "userns.json"


def home_owners_state(userns_state_path: Path) -> Path:
    """Which home volumes were walked into which owner (:mod:`jovial_guard.hardening.home_owner`):
    beside the user-namespace allocation whose ids it records."""
    return Path(userns_state_path).with_name("home-owners.json")
