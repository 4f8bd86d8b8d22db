"""``jovial-guard node-agent``: install the profiles on this node and keep its label honest."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from . import attest
from . import profiles as prof
from .agent import reconcile, run
from .labels import READY_LABEL, NodeLabels, api_client


@click.command("node-agent")
@click.option("--node-name", envvar="NODE_NAME", required=True,
              help="This node's name in the API (a DaemonSet passes spec.nodeName as NODE_NAME).")
@click.option("--kubelet-root", type=click.Path(file_okay=False, path_type=Path), default=prof.DEFAULT_KUBELET_ROOT,
              show_default=True, help="The kubelet's root directory; profiles go to seccomp/jovial-guard/ under it.")
@click.option("--profiles-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of the seccomp profiles to install (default: the project's profiles/seccomp).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Kubeconfig file; without it the pod's in-cluster service account is used.")
@click.option("--interval", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds between checks that the profiles are still in place.")
@click.option("--once", is_flag=True, help="One pass, then exit: 0 when the node is labelled ready.")
@click.option("--attest-interval", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between attestations of the notebook pods on this node (0: off).")
@click.option("--attest-selector", default=attest.DEFAULT_SELECTOR, show_default=True,
              help="Label selector of the notebook pods to attest.")
@click.option("--audit-url", default=None, help="Audit service to post attestations to (its /attestation intake).")
@click.option("--audit-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Bearer token of the audit service's intake.")
def node_agent(node_name: str, kubelet_root: Path, profiles_dir: Path | None, kubeconfig: Path | None,
               interval: float, once: bool, attest_interval: float, attest_selector: str,
               audit_url: str | None, audit_token_file: Path | None) -> None:
    """Install the seccomp profiles into the kubelet's directory, then label the node
    ``jovial-guard.io/profiles-ready=true``; remove the label whenever a profile is missing.
    Beside it, attest the notebook pods running here against their admitted spec."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="node-agent: %(levelname)s %(message)s")
    profiles = prof.load_profiles(profiles_dir or prof.default_source_dir())
    api = api_client(kubeconfig)
    labels = NodeLabels(api, node_name)
    if once:
        result = reconcile(profiles, kubelet_root, labels)
        click.echo(f"node {node_name}: {len(profiles)} profile(s) in {prof.target_dir(kubelet_root)}, "
                   f"rewritten: {', '.join(result.rewritten) or 'none'}; labelled {READY_LABEL}=true "
                   f"(sha256:{result.digest})")
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    attest.start(api, node_name, interval=attest_interval, stop=stop, selector=attest_selector, audit_url=audit_url,
                 audit_token=audit_token_file.read_text().strip() if audit_token_file else None)
    run(profiles, kubelet_root, labels, interval=interval, stop=stop)
