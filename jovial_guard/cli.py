"""`jovial-guard`: the command line.

Sub-command groups live beside the code they drive (``jovial_guard/<area>/cli.py``) and are
registered here lazily: ``jovial-guard --help`` lists them from :data:`SUMMARIES` without
importing any, and ``webhook`` or ``check`` never import JupyterHub or the spawners, so they
run where only the ``[webhook]`` extra is installed (the webhook image).

Errors are handled once, here, for every sub-command: a foreseeable mistake (a missing or
unreadable file, a wrong URL, OPA down, a port in use, a malformed configuration file, a
usage error) prints one line, ``jovial-guard <command>: what is wrong (what to do)``, and
exits with the exception's ``exit_code`` (2 when it has none). Exit 1 stays reserved for
"the answer is no" (denied, verification failed). ``JOVIAL_GUARD_DEBUG=1`` shows the
traceback as well. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import ssl
import traceback
from typing import IO, Any

import click

from .errors import JovialGuardError

#: name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "check": "jovial_guard.policy.check_cli:check",
    "policy": "jovial_guard.policy.cli:policy",
    "up": "jovial_guard.spawn.up_cli:up",
    "creds": "jovial_guard.credentials.cli:creds",
    "audit": "jovial_guard.audit.cli:audit",
    "webhook": "jovial_guard.admission.cli:webhook",
    "profile": "jovial_guard.hardening.profile_cli:profile",
    "audit-cluster": "jovial_guard.clusteraudit.cli:audit_cluster",
    "node-agent": "jovial_guard.node.cli:node_agent",
    "node-ready": "jovial_guard.node.ready_cli:node_ready",
}

#: name -> one-line help shown by ``jovial-guard --help`` (no import needed).
SUMMARIES: dict[str, str] = {
    "check": "Decide workload files against the policy and report the outcome.",
    "policy": "Lint, test, deploy and roll back policies.",
    "up": "Run the embedded hardened hub (needs the [hub] extra).",
    "creds": "Storage credentials: grants, rotation, revocation.",
    "audit": "Runtime audit: intake, log, queries.",
    "webhook": "Kubernetes admission webhook: serve, certificates, NetworkPolicies, chart hooks.",
    "profile": "Seccomp profiles learned from recorded notebook workloads.",
    "audit-cluster": "Decide every running pod against the current policy; PolicyReports.",
    "node-agent": "Node agent: install seccomp profiles into the kubelet's directory and label the node.",
    "node-ready": "The node agent's readiness probe: exit 0 when its last pass succeeded and is recent.",
}

#: Modules of the [hub] extra: a command missing one says which extra to install.
HUB_EXTRA_MODULES = ("jupyterhub", "dockerspawner", "kubespawner", "docker", "traitlets", "kubernetes_asyncio", "tornado")


#: Exit code of a foreseeable mistake (click's own usage errors use it too).
MISTAKE = 2

_ERRNO_HINTS: dict[int, str] = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions or run as a user who may use it",
    errno.EPERM: "check its permissions or run as a user who may use it",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EADDRINUSE: "choose another port or stop what listens there",
    errno.EADDRNOTAVAIL: "listen on an address this machine has",
    errno.ECONNREFUSED: "is the service running at that address?",
    errno.ENOSPC: "free some disk space",
    errno.EROFS: "choose a writable location",
}


def _is_foreseeable(exc: BaseException) -> bool:
    """Mistakes a user can fix from the message alone."""
    if isinstance(exc, (JovialGuardError, OSError, UnicodeDecodeError, json.JSONDecodeError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("yaml"):  # malformed YAML configuration
        return True
    # The project's own ValueError subclasses (rules, records, egress data) name the problem.
    return isinstance(exc, ValueError) and module.startswith("jovial_guard") and type(exc) is not ValueError


def describe(exc: BaseException) -> str:
    """One line: what is wrong and, where it can be said, what to do."""
    if isinstance(exc, ssl.SSLError):
        text = f"TLS setup failed ({exc.reason or exc}): check that the certificate, key and CA files are PEM and belong together"
    elif isinstance(exc, OSError) and exc.errno in _ERRNO_HINTS:
        subject = " ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        what = exc.strerror or str(exc)
        text = f"{what}{': ' + subject if subject else ''} ({_ERRNO_HINTS[exc.errno]})"
    elif isinstance(exc, JovialGuardError):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, json.JSONDecodeError):
        text = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg} (fix the JSON file given to this command)"
    elif isinstance(exc, UnicodeDecodeError):
        text = f"a file given to this command is not UTF-8 ({exc.reason} at byte {exc.start})"
    elif type(exc).__module__.startswith("yaml"):
        text = f"malformed YAML: {exc} (fix the YAML file given to this command)"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


class CliError(click.ClickException):
    """A mistake shown as one line and exited with a chosen code."""

    def __init__(self, where: str, message: str, exit_code: int = MISTAKE) -> None:
        super().__init__(" ".join(message.split()))
        self.where = where
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.where}: {self.message}", err=True)


def _exit_code(exc: BaseException) -> int:
    code = getattr(exc, "exit_code", MISTAKE)
    return code if isinstance(code, int) and code > 0 else MISTAKE


def _converted(exc: Exception, where: str) -> CliError | None:
    """The one-line form of ``exc``; None when it is a bug (keep its traceback)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, click.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else where
        return CliError(path, f"{exc.format_message()} (see '{path} --help')", exc.exit_code)
    if isinstance(exc, click.ClickException):
        # A code set on this exception, or carried by the project error it replaced, is
        # kept (a verification "no" is 1). click's class default (1) would read as
        # "denied" to a caller of check, so without one it is a mistake: 2.
        code = vars(exc).get("exit_code")
        origin = exc.__cause__ or exc.__context__
        if code is None and origin is not None:
            code = getattr(origin, "exit_code", None)
        return CliError(where, exc.format_message(), code if isinstance(code, int) and code > 0 else MISTAKE)
    if _is_foreseeable(exc):
        if os.environ.get("JOVIAL_GUARD_DEBUG") == "1":
            traceback.print_exception(exc)
        return CliError(where, describe(exc), _exit_code(exc))
    return None


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used, with one error path."""

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
                raise click.ClickException(f"'{cmd_name}' is not available in this build ({exc.name})") from None
            if exc.name and exc.name.split(".")[0] in HUB_EXTRA_MODULES:
                raise click.ClickException(
                    f"'{cmd_name}' needs the hub extra (missing module {exc.name}): pip install 'jovial_guard[hub]'"
                ) from None
            raise
        command: Any = getattr(module, attr)
        return command  # type: ignore[no-any-return]

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.Exit:
            raise
        except Exception as exc:
            converted = _converted(exc, info_name or "jovial-guard")
            if converted is None:
                raise
            raise converted from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            where = " ".join(filter(None, [ctx.command_path, ctx.invoked_subcommand]))
            converted = _converted(exc, where)
            if converted is None:
                raise
            raise converted from exc


@click.group(cls=LazyGroup)
@click.version_option(package_name="jovial_guard")
def main() -> None:
    """Sandboxing and policy enforcement for multi-user notebook clouds."""


if __name__ == "__main__":  # pragma: no cover
    main()
