"""``jovial-guard node-ready``: the node agent's readiness probe.

Its own module, importing only :mod:`.readiness`: the probe runs every few seconds inside the
agent's container, under the agent's memory limit, so it must not load the agent's
dependencies (the Kubernetes client, nftables, the policy code).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import readiness


@click.command("node-ready")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The node agent's --status-file.")
def node_ready(status_file: Path) -> None:
    """Exit 0 when the node agent is ready: its last good pass is recent, the profiles it
    installed are unchanged and its CNI hand-off socket (if it serves one) answers; else
    print why and exit 1. The DaemonSets' readiness probe (an exec probe: no network port)."""
    found = readiness.problems(status_file)
    if found:
        for problem in found:
            click.echo(f"node agent not ready: {problem}", err=True)
        sys.exit(1)
    click.echo("node agent ready")
