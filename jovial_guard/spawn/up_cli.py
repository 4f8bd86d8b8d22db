"""``jovial-guard up``: the embedded hardened notebook cloud in one command.

Starts the managed OPA, the project's podman service, makes sure the notebook image exists
(building it with progress on first run; reused afterwards), then JupyterHub with the
repository's ``jupyterhub_config.py`` (which starts configurable-http-proxy). Prints the URL
and a login, restarts OPA and the engine service if they exit, and on Ctrl-C (SIGINT) or
SIGTERM stops everything in reverse order. Missing system pieces are installed by
``./guard up``, which runs the setup scripts first and then this command.

State (hub database, keys, logs, policy store, home volumes) lives in the state directory
(:mod:`jovial_guard.paths`); an older installation's state found in the cache is moved
there once, with a message.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from ..errors import JovialGuardError
from ..hardening import apparmor, seccomp
from ..hardening.egress import DEFAULT_POOL
from ..paths import cache_dir, hub_state_dir
from ..policy.opa_process import find_opa
from ..runtime.podman import DEFAULT_SOCKET, PodmanService, default_root
from .migrate import migrate_cache_state
from .stack import REPO_ROOT, EmbeddedStack, StackSettings


def _missing_tools() -> list[str]:
    """What ``./guard up`` would install; an empty list means we can start."""
    missing = []
    try:
        find_opa()
    except JovialGuardError:
        missing.append("opa (scripts/install-opa.sh)")
    for tool, how in (("podman", "scripts/install-system.sh"), ("runc", "scripts/install-system.sh"),
                      ("nft", "scripts/install-system.sh"), ("ip", "scripts/install-system.sh")):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            missing.append(f"{tool} ({how})")
    chp = REPO_ROOT / ".tools" / "bin" / "configurable-http-proxy"
    if not chp.exists() and not shutil.which("configurable-http-proxy"):
        missing.append("configurable-http-proxy (scripts/setup.d/30-node-proxy.sh)")
    return missing


def _login_secret(state_dir: Path, name: str, variable: str) -> str:
    """The password the hub uses: from the environment if set there, else its state file."""
    return os.environ.get(variable) or (state_dir / name).read_text().strip()


@click.command("up")
@click.option("--port", default=8000, show_default=True, help="Public port of the hub (loopback).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the public proxy listens on.")
@click.option("--hub-port", default=8081, show_default=True,
              help="Hub API port, on the egress hub address user containers reach.")
@click.option("--proxy-api-port", default=8001, show_default=True, help="Proxy API port (loopback).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Hub database, secrets, keys and logs (default: STATE/hub; "
                   "STATE is $JOVIAL_GUARD_STATE_DIR, /var/lib/jovial-guard for root, else "
                   "$XDG_STATE_HOME/jovial-guard).")
@click.option("--engine-socket", type=click.Path(path_type=Path), default=DEFAULT_SOCKET,
              show_default=True, help="Socket of the project's podman Docker API service.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True),
              default=REPO_ROOT / "jupyterhub_config.py", show_default=True)
@click.option("--netns-prefix", default="jg", show_default=True,
              help="Prefix of the network namespaces this hub makes (two hubs on one machine "
                   "need different ones).")
@click.option("--egress-pool", default=DEFAULT_POOL, show_default=True,
              help="Address pool of the users' namespaces (a /16 no other hub uses).")
def up(port: int, host: str, hub_port: int, proxy_api_port: int, state_dir: Path | None,
       engine_socket: Path, config_file: Path, netns_prefix: str, egress_pool: str) -> None:
    """Run the embedded hardened notebook cloud until Ctrl-C."""
    missing = _missing_tools()
    if missing:
        raise click.ClickException(
            "missing: " + ", ".join(missing) + ". Run ./guard up, which installs them first."
        )
    # The hardening profiles are checked before anything starts: a missing or weak profile
    # must stop start-up, not the first spawn.
    try:
        seccomp.validate_profile_file(seccomp.notebook_profile_path())
        apparmor.validate_profile(apparmor.notebook_profile_path())
    except JovialGuardError as exc:
        raise click.ClickException(f"start-up stopped: {exc}") from None
    settings = StackSettings(
        state_dir=state_dir or hub_state_dir(),
        bind_host=host, bind_port=port, hub_port=hub_port, proxy_api_port=proxy_api_port,
        config_file=config_file.resolve(), engine_socket=engine_socket,
        netns_prefix=netns_prefix, egress_pool=egress_pool,
    )
    if state_dir is None:
        try:
            migrate_cache_state(cache=cache_dir(), hub_state=settings.state_dir,
                                engine=PodmanService(engine_socket, root=default_root()),
                                progress=lambda m: click.echo(f"==> {m}", err=True))
        except (JovialGuardError, OSError) as exc:
            raise click.ClickException(f"start-up stopped: {exc}") from None
    click.echo(f"==> state: {settings.state_dir} (back it up); cache: {cache_dir()} (safe to delete)",
               err=True)
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        raise KeyboardInterrupt

    # Both explicitly: a shell may start us with SIGINT ignored (background jobs).
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    stack = EmbeddedStack(settings, progress=lambda m: click.echo(f"==> {m}", err=True))
    try:
        stack.start()
    except KeyboardInterrupt:
        click.echo("interrupted; stopped everything", err=True)
        sys.exit(130)
    except JovialGuardError as exc:
        raise click.ClickException(f"start-up stopped: {exc}") from None
    try:
        password = _login_secret(settings.state_dir, "user-password", "JOVIAL_GUARD_PASSWORD")
        admin_password = _login_secret(settings.state_dir, "admin-password", "JOVIAL_GUARD_ADMIN_PASSWORD")
        click.echo("")
        click.echo(f"  jovial_guard notebook cloud: {settings.url}/")
        click.echo(f"  log in as any user name (try alice: groups astro, large-memory) "
                   f"with password: {password}")
        click.echo(f"  admin: guardadmin / {admin_password}")
        click.echo(f"  admin dashboard: {settings.url}/services/jovial-guard-dashboard/")
        click.echo("  policy: jovial-guard policy dry-run|deploy|rollback|history (docs/admin.md)")
        click.echo(f"  logs: {settings.state_dir}/jupyterhub.log    Ctrl-C stops everything")
        click.echo("")
        while not stopping.is_set():
            if stack.hub is None or not stack.hub.alive():
                tail = stack.hub.log_tail() if stack.hub else ""
                raise click.ClickException(f"JupyterHub exited unexpectedly:\n{tail}")
            stopping.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        click.echo("==> stopping JupyterHub, user servers, proxy, podman and OPA", err=True)
        stack.stop()
        click.echo("==> stopped", err=True)
