"""`jovial-guard`: the command line.

Sub-command groups live beside the code they drive (``jovial_guard/<area>/cli.py``) and are
registered here lazily: ``jovial-guard --help`` lists them from :data:`SUMMARIES` without
importing any, and ``webhook`` or ``check`` never import JupyterHub or the spawners, so they
run where only the ``[webhook]`` extra is installed (the webhook image).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

#: name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "check": "jovial_guard.policy.check_cli:check",
    "policy": "jovial_guard.policy.cli:policy",
    "up": "jovial_guard.spawn.up_cli:up",
    "creds": "jovial_guard.credentials.cli:creds",
    "audit": "jovial_guard.audit.cli:audit",
    "webhook": "jovial_guard.admission.cli:webhook",
}

#: name -> one-line help shown by ``jovial-guard --help`` (no import needed).
SUMMARIES: dict[str, str] = {
    "check": "Decide workload files against the policy and report the outcome.",
    "policy": "Lint, test, deploy and roll back policies.",
    "up": "Run the embedded hardened hub (needs the [hub] extra).",
    "creds": "Storage credentials: grants, rotation, revocation.",
    "audit": "Runtime audit: intake, log, queries.",
    "webhook": "Kubernetes admission webhook: serve, certificates, NetworkPolicies, chart hooks.",
}

#: Modules of the [hub] extra: a command missing one says which extra to install.
HUB_EXTRA_MODULES = ("jupyterhub", "dockerspawner", "kubespawner", "docker", "traitlets", "kubernetes", "kubernetes_asyncio", "tornado")


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`SUMMARIES`: listing imports nothing."""
        rows = [(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("jovial_guard"):
                raise click.ClickException(f"'{cmd_name}' is not available in this build ({exc.name})") from exc
            if exc.name and exc.name.split(".")[0] in HUB_EXTRA_MODULES:
                raise click.ClickException(
                    f"'{cmd_name}' needs the hub extra (missing module {exc.name}): pip install 'jovial_guard[hub]'") from exc
            raise
        command: Any = getattr(module, attr)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup)
@click.version_option(package_name="jovial_guard")
def main() -> None:
    """Sandboxing and policy enforcement for multi-user notebook clouds."""


if __name__ == "__main__":  # pragma: no cover
    main()
