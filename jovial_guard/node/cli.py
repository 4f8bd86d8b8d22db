"""``jovial-guard node-agent``: profiles, storage grants and pod egress on this node.

Always: install the seccomp profiles and keep the node's label honest. With
``--grants-namespace``: publish the node's grant key and mount the users' filesets the
sealed grants name. With ``--cni-socket``: answer the chained CNI plugin with each notebook
pod's egress rules. Always, unless `--attest-interval 0`: attest the notebook pods running
here. Each duty is its own thread; a failing one never stops the others. Each pass also
labels the node by its user-namespace support (:mod:`.userns`). With ``--status-file``, a
good pass leaves the status that ``jovial-guard node-ready`` (the pods' readiness probe)
checks (:mod:`.readiness`).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from ..errors import Misconfigured
from ..policy.opa_process import DEFAULT_POLICY_DIR
from . import attest, readiness, userns
from . import profiles as prof
from .agent import PassResult, reconcile, run, run_every, start
from .labels import READY_LABEL, NodeLabels, api_client

DEFAULT_STATE = Path("/var/lib/jovial-guard-node")
_dir = click.Path(file_okay=False, path_type=Path)


@click.command("node-agent")
@click.option("--node-name", envvar="NODE_NAME", required=True,
              help="This node's name in the API (a DaemonSet passes spec.nodeName as NODE_NAME).")
@click.option("--kubelet-root", type=_dir, default=prof.DEFAULT_KUBELET_ROOT,
              show_default=True, help="The kubelet's root directory; profiles go to seccomp/jovial-guard/ under it.")
@click.option("--profiles-dir", type=_dir, default=None,
              help="Directory of the seccomp profiles to install (default: the project's profiles/seccomp).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Kubeconfig file; without it the pod's in-cluster service account is used.")
@click.option("--interval", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds between checks that the profiles are still in place.")
@click.option("--once", is_flag=True, help="One pass (profiles, grants), then exit: 0 when the node is labelled ready.")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the readiness status here after each good pass (what `jovial-guard node-ready` checks); "
                   "removed at start and on a failed pass. Off when not given.")
@click.option("--state-dir", type=_dir, default=DEFAULT_STATE, show_default=True,
              help="The agent's own state: the node's grant key (0600), withdrawn grants, mount work directory.")
@click.option("--grants-namespace", default=None,
              help="Receive storage grants as Secrets in this namespace (the agent's own); off when not given.")
@click.option("--issuer-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The issuer's Ed25519 public key (PEM, issuer-signing.key.pub): grants must be signed by it.")
@click.option("--storage-root", type=_dir, default=None, help="Where the users' filesets are on this node (bind backend).")
@click.option("--staging-root", type=_dir, default=DEFAULT_STATE / "staging", show_default=True,
              help="Per-user staging directories; must equal settings.node.staging_root in the policy data.")
@click.option("--grant-interval", type=click.FloatRange(min=0.2), default=5.0, show_default=True,
              help="Seconds between grant passes (new grants, withdrawals, expiry).")
@click.option("--cni-socket", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Serve the jovial-guard-egress CNI plugin on this unix socket; off when not given.")
@click.option("--cni-bin-dir", type=_dir, default=None, help="Install the CNI plugin script into this directory.")
@click.option("--cni-python", default="/usr/bin/python3", show_default=True, help="The interpreter the plugin script runs with.")
@click.option("--cni-conflist", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Chain the plugin into this CNI conflist (the network plugin's), and keep it chained.")
@click.option("--guarded-namespace", multiple=True,
              help="Namespaces whose pods the chained plugin asks the agent about (repeatable; none: every pod).")
@click.option("--policy-data", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=DEFAULT_POLICY_DIR / "data.json", show_default=True,
              help="The policy data whose settings.egress and settings.hub.notebook_labels the rules come from.")
@click.option("--hub-address", multiple=True, help="The hub API's address as notebook pods reach it (repeatable), e.g. 10.0.4.1/32.")
@click.option("--hub-port", type=click.IntRange(1, 65535), multiple=True, default=(8081,), show_default=True,
              help="The hub API's port(s).")
@click.option("--ingress-from", multiple=True, help="Who may open the notebook port (default: the hub addresses).")
@click.option("--notebook-port", type=click.IntRange(1, 65535), default=8888, show_default=True)
@click.option("--attest-interval", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between attestations of the notebook pods on this node (0: off).")
@click.option("--attest-selector", default=attest.DEFAULT_SELECTOR, show_default=True,
              help="Label selector of the notebook pods to attest; pods the webhook recorded as notebooks (annotation jovial-guard.io/notebook) are attested too.")
@click.option("--audit-url", default=None, help="Audit service to post attestations to (its /attestation intake).")
@click.option("--audit-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Bearer token of the audit service's intake.")
def node_agent(node_name: str, kubelet_root: Path, profiles_dir: Path | None, kubeconfig: Path | None,
               interval: float, once: bool, status_file: Path | None, state_dir: Path, grants_namespace: str | None, issuer_key: Path | None,
               storage_root: Path | None, staging_root: Path, grant_interval: float, cni_socket: Path | None,
               cni_bin_dir: Path | None, cni_python: str, cni_conflist: Path | None, guarded_namespace: tuple[str, ...],
               policy_data: Path, hub_address: tuple[str, ...],
               hub_port: tuple[int, ...], ingress_from: tuple[str, ...], notebook_port: int,
               attest_interval: float, attest_selector: str, audit_url: str | None,
               audit_token_file: Path | None) -> None:
    """Install the seccomp profiles into the kubelet's directory, then label the node
    ``jovial-guard.io/profiles-ready=true``; remove the label whenever a profile is missing.
    Beside it, attest the notebook pods running here against their admitted spec, and
    optionally receive storage grants and enforce notebook pods' egress (see the options)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="node-agent: %(levelname)s %(message)s")
    if status_file is not None:
        readiness.clear(status_file)
    profiles = prof.load_profiles(profiles_dir or prof.default_source_dir())
    api = api_client(kubeconfig)
    labels = NodeLabels(api, node_name)
    grants = None
    if grants_namespace:
        from .grants import NodeGrants, load_issuer_key

        if issuer_key is None or storage_root is None:
            raise click.UsageError("--grants-namespace needs --issuer-key and --storage-root")
        grants = NodeGrants(api, node_name=node_name, namespace=grants_namespace, state_dir=state_dir,
                            issuer_key=load_issuer_key(issuer_key), storage_root=storage_root, staging_root=staging_root)
        grants.publish_key(labels)
    server = None
    if cni_socket is not None:
        from .egress import EgressAgent, EgressServer, EgressSettings, api_pod_lookup, install_plugin

        if not hub_address:
            raise click.UsageError("--cni-socket needs --hub-address: notebook pods must reach the hub API")
        settings = EgressSettings.load(policy_data, hub=hub_address, hub_ports=hub_port, ingress_from=ingress_from,
                                       notebook_port=notebook_port)
        if cni_bin_dir is not None:
            install_plugin(cni_bin_dir, python=cni_python)
        server = EgressServer(cni_socket, EgressAgent(settings, api_pod_lookup(api), node_name=node_name))
    chain = None
    if cni_conflist is not None:
        from . import cni_conflist as conflist

        if cni_socket is None:
            raise click.UsageError("--cni-conflist needs --cni-socket")
        wanted = conflist.entry(socket=cni_socket, namespaces=guarded_namespace)
        path = cni_conflist

        def chain() -> None:
            if conflist.ensure_chained(path, wanted):
                logging.getLogger("jovial_guard.node").warning("egress: chained %s into %s", wanted["type"], path)
    def after(_: PassResult) -> None:
        support = userns.label_node(labels)
        if status_file is not None:
            try:
                readiness.record(status_file, node=node_name, interval=interval, profile_dir=prof.target_dir(kubelet_root),
                                 profiles=profiles, socket_path=cni_socket)
            except OSError as exc:
                raise Misconfigured(f"cannot write the readiness status {status_file}: {exc}") from None
        if support.supported != last_support.get("supported"):
            last_support["supported"] = support.supported
            logging.getLogger("jovial_guard.node").info("user namespaces: %s=%s (%s)", userns.LABEL,
                                                        str(support.supported).lower(), support.reason)

    def failed() -> None:
        if status_file is not None:
            readiness.clear(status_file)

    last_support: dict[str, bool] = {}
    if once:
        result = reconcile(profiles, kubelet_root, labels)
        after(result)
        for line in grants.sync() if grants else ():
            click.echo(f"grants: {line}")
        click.echo(f"node {node_name}: {len(profiles)} profile(s) in {prof.target_dir(kubelet_root)}, "
                   f"rewritten: {', '.join(result.rewritten) or 'none'}; labelled {READY_LABEL}=true "
                   f"(sha256:{result.digest})")
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    attest.start(api, node_name, interval=attest_interval, stop=stop, selector=attest_selector, audit_url=audit_url,
                 audit_token=audit_token_file.read_text().strip() if audit_token_file else None)
    if server is not None:
        server.serve_in_thread()
        logging.getLogger("jovial_guard.node").info("egress: serving the CNI plugin on %s", cni_socket)
    if chain is not None:
        chain()  # before any pass: a conflist that cannot be chained stops the agent here
        start("cni-conflist", lambda: run_every("cni-conflist", chain, interval=interval, stop=stop))
    if grants is not None:
        sync = grants.sync

        def grant_pass() -> None:
            for line in sync():
                logging.getLogger("jovial_guard.node.grants").info("%s", line)

        start("grants", lambda: run_every("grants", grant_pass, interval=grant_interval, stop=stop))
    try:
        run(profiles, kubelet_root, labels, interval=interval, stop=stop, after=after, failed=failed)
    finally:
        failed()
        if server is not None:
            server.close()
