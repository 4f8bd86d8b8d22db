"""`jovial-guard`: the command line.

Sub-command groups live beside the code they drive (``jovial_guard/<area>/cli.py``) and are
registered here lazily, so ``jovial-guard check`` does not import JupyterHub or Kubernetes.
"""

from __future__ import annotations

import importlib
import importlib.util
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
    "audit-cluster": "jovial_guard.clusteraudit.cli:audit_cluster",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            name
            for name, target in SUBCOMMANDS.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("jovial_guard"):
                raise click.ClickException(f"'{cmd_name}' is not available in this build ({exc.name})")
            raise
        command: Any = getattr(module, attr)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup)
@click.version_option(package_name="jovial_guard")
def main() -> None:
    """Sandboxing and policy enforcement for multi-user notebook clouds."""


if __name__ == "__main__":  # pragma: no cover
    main()
