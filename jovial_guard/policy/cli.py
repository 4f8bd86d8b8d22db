"""`jovial-guard policy ...`: the security admin's Rego workflow.

``lint`` is ``opa check --strict`` plus ``opa fmt`` (``--fmt-check`` fails on unformatted
files); ``test`` is ``opa test`` with coverage and a minimum. Both run the real ``opa``
binary on the real policy directory, so what passes here is what OPA will load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .cli_checks import lint_policies, test_policies
from .opa_process import DEFAULT_POLICY_DIR

if TYPE_CHECKING:
    from .client import OpaEndpoint
    from .decision_log import DecisionLog
    from .store import PolicyStore


@click.group()
def policy() -> None:
    """Lint, test and manage the Rego policy set."""


@policy.command()
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_POLICY_DIR), show_default=True)
@click.option("--fmt-check/--no-fmt-check", default=True, show_default=True, help="Also fail on files `opa fmt` would change.")
def lint(policy_dir: str, fmt_check: bool) -> None:
    """opa check --strict (and opa fmt --fail) on the policy directory."""
    ok, report = lint_policies(Path(policy_dir), fmt_check=fmt_check)
    if report:
        click.echo(report, err=not ok)
    click.echo("lint: ok" if ok else "lint: FAILED", err=not ok)
    sys.exit(0 if ok else 1)


@policy.command(name="test")
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_POLICY_DIR), show_default=True)
@click.option("--min-coverage", type=float, default=90.0, show_default=True, help="Fail below this coverage percentage.")
def test_command(policy_dir: str, min_coverage: float) -> None:
    """opa test with coverage."""
    ok, coverage, report = test_policies(Path(policy_dir), min_coverage=min_coverage)
    click.echo(report)
    click.echo(f"coverage: {coverage:.1f}% (minimum {min_coverage:.1f}%)")
    sys.exit(0 if ok else 1)


@policy.command()
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_POLICY_DIR), show_default=True)
@click.option("--check", "check_only", is_flag=True, help="Only report files that are not formatted (exit 1), change nothing.")
def fmt(policy_dir: str, check_only: bool) -> None:
    """opa fmt: format the policies in place, or --check them."""
    import subprocess

    from .opa_process import find_opa

    args = ["fmt", "--list", "--fail"] if check_only else ["fmt", "-w"]
    proc = subprocess.run([find_opa(), *args, policy_dir], capture_output=True, text=True)
    click.echo((proc.stdout + proc.stderr).strip() or ("fmt: ok" if proc.returncode == 0 else ""))
    sys.exit(0 if proc.returncode == 0 else 1)


# --- lifecycle: diff, dry-run, deploy, rollback, history, bundles -------------------

def _state_dir() -> Path:
    """The embedded hub's state directory (`jovial-guard up`'s --state-dir default)."""
    from ..paths import hub_state_dir

    return hub_state_dir()


def _store(store_dir: str | None) -> PolicyStore:
    from .store import PolicyStore

    return PolicyStore(Path(store_dir) if store_dir else _state_dir() / "policy-store")


def _runtime() -> dict[str, Any]:
    """What `jovial-guard up` wrote about its running pieces ({} when it is not running)."""
    import json as _json

    runtime = _state_dir() / "runtime.json"
    if not runtime.exists():
        return {}
    try:
        doc = _json.loads(runtime.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{runtime} is not JSON ({exc}): restart `jovial-guard up`") from exc
    return doc if isinstance(doc, dict) else {}


def _endpoint(opa_url: str | None, token: str | None) -> OpaEndpoint:
    from .client import OpaEndpoint

    if not opa_url:
        opa_url = _runtime().get("opa_url")
    if not opa_url:
        raise click.ClickException("no running OPA: pass --opa-url, set JOVIAL_GUARD_OPA_URL, or start `jovial-guard up`")
    return OpaEndpoint(opa_url, token=token)


def _decision_log(path: str | None) -> DecisionLog:
    from .decision_log import DecisionLog

    return DecisionLog(Path(path) if path else _state_dir() / "decisions.jsonl")


def _since(text: str | None) -> float | None:
    import re
    import time

    if not text:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise click.BadParameter("use a duration like 30m, 12h or 7d", param_hint="--since")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return time.time() - seconds


_store_option = click.option("--store", "store_dir", envvar="JOVIAL_GUARD_POLICY_STORE", help="Policy store directory (default: STATE/hub/policy-store).")
_opa_options = [
    click.option("--opa-url", envvar="JOVIAL_GUARD_OPA_URL", help="The running OPA (default: from `jovial-guard up`'s runtime file)."),
    click.option("--opa-token", envvar="JOVIAL_GUARD_OPA_TOKEN"),
]
_F = TypeVar("_F", bound=Callable[..., Any])
_cluster_options = [
    click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Publish the signed bundle to a cluster with this kubeconfig (with --configmap)."),
    click.option("--configmap", default=None, help="NAMESPACE/NAME of the ConfigMap the cluster's bundle service serves, e.g. jhub/jovial-guard-policy."),
    click.option("--replica-opa-url", "replica_opa_urls", multiple=True,
                 help="An OPA that must switch to the revision and pass the probe (repeatable: one per webhook replica); default: --opa-url."),
    click.option("--bundle-url", default=None,
                 help="The cluster's bundle service (e.g. through `kubectl port-forward`): wait until --replicas OPAs report the revision there."),
    click.option("--replicas", default=1, show_default=True, type=int, help="With --bundle-url: how many OPA replicas must activate the revision."),
    click.option("--probe-namespace", default=None,
                 help="With --kubeconfig: dry-run the known-good and known-bad pods in this guarded namespace through the API server after the switch."),
]


def _cluster_target(store: PolicyStore, kubeconfig: str | None, configmap: str | None, opa_url: str | None,
                    opa_token: str | None, replicas: tuple[str, ...], bundle_url: str | None = None, count: int = 1,
                    probe_namespace: str | None = None) -> tuple[Any, Any, Any, Any]:
    """(endpoints, publish, wait_replicas, extra_probe) for deploy/rollback: the local OPA, or a cluster's replicas."""
    from .client import OpaEndpoint

    extra_probe = None
    if probe_namespace:
        from .cluster_probe import api_server_probe

        extra_probe = api_server_probe(kubeconfig, probe_namespace)

    if bundle_url:
        wait = _replicas_wait(bundle_url, count)
    elif not (replicas or configmap):
        wait = _local_workers_wait(store)
    else:
        wait = None

    publish = None
    if configmap:
        from .publish import ConfigMapBundle, parse_target

        namespace, name = parse_target(configmap)
        publish = ConfigMapBundle(namespace, name, kubeconfig=kubeconfig).publish
    elif kubeconfig:
        raise click.BadParameter("--kubeconfig needs --configmap NAMESPACE/NAME", param_hint="--configmap")
    if replicas:
        return [OpaEndpoint(u, token=opa_token) for u in replicas], publish, wait, extra_probe
    if bundle_url and not opa_url:
        return [], publish, wait, extra_probe
    return _endpoint(opa_url, opa_token), publish, wait, extra_probe


def _replicas_wait(bundle_url: str, count: int) -> Any:
    """Wait until ``count`` of a cluster's replicas report the revision to ``bundle_url``."""
    from .replicas import wait_replicas

    async def wait(revision: str, timeout: float) -> float:
        return await wait_replicas(bundle_url, revision, replicas=count, timeout=timeout)

    return wait


def _local_workers_wait(store: PolicyStore) -> Any:
    """With `jovial-guard up` serving ``store``: wait until its hub (which decides spawns
    with the compiled policy of the bundle it follows) serves the revision, as OPA must."""
    runtime = _runtime()
    local_bundles, served = runtime.get("bundle_url"), runtime.get("policy_store")
    if not local_bundles or not served or Path(str(served)).resolve() != store.root.resolve():
        return None
    from .replicas import wait_workers

    async def wait(revision: str, timeout: float) -> float:
        return await wait_workers(str(local_bundles), revision, timeout=timeout)

    return wait


_log_option = click.option("--decision-log", envvar="JOVIAL_GUARD_DECISION_LOG", help="Decision log (default: STATE/hub/decisions.jsonl).")


def _with(options: list[Callable[[_F], _F]]) -> Callable[[_F], _F]:
    """Apply several click options as one decorator."""
    def wrap(f: _F) -> _F:
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@policy.command()
@click.argument("rev_a")
@click.argument("rev_b")
@_store_option
def diff(rev_a: str, rev_b: str, store_dir: str | None) -> None:
    """Unified diff of the policies and data of two revisions (see `history`)."""
    from .store import StoreError

    try:
        for line in _store(store_dir).diff(rev_a, rev_b):
            click.echo(line, nl=False)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


@policy.command(name="dry-run")
@click.argument("candidate", type=click.Path(file_okay=False, exists=True))
@click.option("--since", default="7d", show_default=True, help="Replay decisions recorded in this window (30m, 12h, 7d).")
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), help="Compare against this policy directory instead of the deployed revision.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_store_option
@_log_option
def dry_run_command(candidate: str, since: str, baseline: str | None, as_json: bool, store_dir: str | None, decision_log: str | None) -> None:
    """Replay recorded decisions against CANDIDATE: who would change, and why."""
    import asyncio
    import json as _json

    from .lifecycle import dry_run

    store = _store(store_dir)
    current = store.current()
    base = Path(baseline) if baseline else (store.source_dir(current) if current else DEFAULT_POLICY_DIR)
    records = list(_decision_log(decision_log).records(since=_since(since)))
    report = asyncio.run(dry_run(records, baseline=base, candidate=Path(candidate)))
    if as_json:
        click.echo(_json.dumps({**report.summary(), "details": [c.__dict__ | {"direction": c.direction} for c in report.changes]}, indent=2))
    else:
        click.echo("\n".join(report.lines()))


@policy.command()
@click.argument("candidate", type=click.Path(file_okay=False, exists=True))
@click.option("--since", default="7d", show_default=True, help="Dry-run window of recorded decisions.")
@click.option("--min-coverage", type=float, default=90.0, show_default=True)
@_store_option
@_log_option
@_with(_opa_options)
@_with(_cluster_options)
def deploy(candidate: str, since: str, min_coverage: float, store_dir: str | None, decision_log: str | None, opa_url: str | None, opa_token: str | None,
           kubeconfig: str | None, configmap: str | None, replica_opa_urls: tuple[str, ...], bundle_url: str | None, replicas: int,
           probe_namespace: str | None) -> None:
    """Lint, test, dry-run, then activate CANDIDATE as a new signed revision; probe; roll back on failure."""
    import asyncio

    from ..errors import JovialGuardError, PolicyEngineUnavailable
    from .lifecycle import deploy as do_deploy

    store = _store(store_dir)
    endpoint, publish, wait, extra = _cluster_target(store, kubeconfig, configmap, opa_url, opa_token, replica_opa_urls, bundle_url, replicas,
                                                     probe_namespace)
    records = list(_decision_log(decision_log).records(since=_since(since)))
    try:
        asyncio.run(do_deploy(store, Path(candidate), endpoint=endpoint, records=records, min_coverage=min_coverage, say=click.echo,
                              publish=publish, wait_replicas=wait, extra_probe=extra))
    except JovialGuardError as exc:
        click.echo(f"deploy: {exc}", err=True)
        # OPA unreachable is a mistake to fix (2), not a refused deploy (1).
        sys.exit(2 if isinstance(exc, PolicyEngineUnavailable) else 1)


@policy.command()
@click.argument("revision", required=False)
@_store_option
@_with(_opa_options)
@_with(_cluster_options)
def rollback(revision: str | None, store_dir: str | None, opa_url: str | None, opa_token: str | None,
             kubeconfig: str | None, configmap: str | None, replica_opa_urls: tuple[str, ...], bundle_url: str | None, replicas: int,
             probe_namespace: str | None) -> None:
    """Re-activate REVISION (default: the one before the current)."""
    import asyncio

    from ..errors import JovialGuardError, PolicyEngineUnavailable
    from .lifecycle import rollback as do_rollback

    store = _store(store_dir)
    try:
        endpoint, publish, wait, extra = _cluster_target(store, kubeconfig, configmap, opa_url, opa_token, replica_opa_urls, bundle_url, replicas,
                                                         probe_namespace)
        asyncio.run(do_rollback(store, endpoint=endpoint, revision=revision, say=click.echo, publish=publish,
                                wait_replicas=wait, extra_probe=extra))
    except JovialGuardError as exc:
        click.echo(f"rollback: {exc}", err=True)
        # OPA unreachable is a mistake to fix (2), not a refused rollback (1).
        sys.exit(2 if isinstance(exc, PolicyEngineUnavailable) else 1)


@policy.command()
@_store_option
def history(store_dir: str | None) -> None:
    """Who deployed what, when, with which checks (hash chain verified)."""
    import datetime as dt

    from .store import StoreError

    store = _store(store_dir)
    try:
        entries = store.history()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    current = store.current()
    for e in entries:
        when = dt.datetime.fromtimestamp(e.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if e.revision == current and e.action in ("deploy", "rollback") else " "
        checks = " ".join(f"{k}={e.details[k]}" for k in ("lint", "tests", "coverage", "switch_seconds") if k in e.details)
        click.echo(f"{mark} {e.seq:4d} {when}Z {e.actor:12s} {e.action:13s} {e.revision}  (from {e.previous})  {checks}")


@policy.group()
def bundle() -> None:
    """Signed OPA bundles."""


@bundle.command(name="build")
@click.argument("policy_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="bundle.tar.gz", show_default=True)
@_store_option
def bundle_build(policy_dir: str, output: str, store_dir: str | None) -> None:
    """Build a bundle of POLICY_DIR signed with the store's key (with its key id)."""
    from .bundles import build_bundle

    store = _store(store_dir)
    revision = build_bundle(Path(policy_dir), Path(output), key=store.key)
    click.echo(f"{output}: revision {revision}, signed ES256 with key id {store.key.key_id}")


@bundle.command(name="verify")
@click.argument("bundle_file", type=click.Path(dir_okay=False, exists=True))
@_store_option
def bundle_verify(bundle_file: str, store_dir: str | None) -> None:
    """Verify BUNDLE_FILE's signature and file digests against the store's key."""
    from .bundles import BundleError, verify_bundle

    try:
        verify_bundle(Path(bundle_file), key=_store(store_dir).key)
    except BundleError as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{bundle_file}: signature and contents verified")


@policy.command(name="serve-bundles")
@click.option("--configmap", required=True, help="NAMESPACE/NAME of the ConfigMap `policy deploy --configmap` publishes to.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None, help="Default: in-cluster credentials.")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8282, show_default=True, type=int)
@click.option("--interval", default=1.0, show_default=True, type=float, help="Seconds between ConfigMap reads.")
def serve_bundles(configmap: str, kubeconfig: str | None, host: str, port: int, interval: float) -> None:
    """The cluster's bundle service: serve the published signed bundle to every OPA (long polling)."""
    import signal
    import threading

    from .bundle_server import BundleServer
    from .publish import ConfigMapBundle, ConfigMapSource, parse_target

    namespace, name = parse_target(configmap)
    source = ConfigMapSource(ConfigMapBundle(namespace, name, kubeconfig=kubeconfig), interval=interval).start()
    server = BundleServer(source, host=host, port=port).start()
    click.echo(f"serving {namespace}/{name} on {server.url}", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    source.stop()


@policy.command()
@click.argument("revision", required=False)
@_store_option
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None, help="Default: in-cluster credentials.")
@click.option("--configmap", required=True, help="NAMESPACE/NAME of the ConfigMap the cluster's bundle service serves.")
def publish(revision: str | None, store_dir: str | None, kubeconfig: str | None, configmap: str) -> None:
    """Publish REVISION (default: the store's current one) to a cluster without a probe.

    For a first install, before any replica's OPA can answer (they become ready only once
    a bundle is served), and to restore the ConfigMap; later changes go through `deploy`.
    """
    from ..errors import JovialGuardError
    from .bundles import verify_bundle
    from .publish import ConfigMapBundle, parse_target

    store = _store(store_dir)
    revision = revision or store.current()
    if not revision:
        raise click.ClickException("the store has no current revision: run `jovial-guard policy deploy` first")
    try:
        if not store.has(revision):
            raise JovialGuardError(f"no revision {revision} in the store; see `jovial-guard policy history`")
        verify_bundle(store.bundle_path(revision), key=store.key)
        namespace, name = parse_target(configmap)
        ConfigMapBundle(namespace, name, kubeconfig=kubeconfig).publish(revision, store.bundle_path(revision).read_bytes())
    except JovialGuardError as exc:
        click.echo(f"publish: {exc}", err=True)
        sys.exit(1)
    store.record("publish", revision, previous=None, details={"configmap": configmap})
    click.echo(f"published {revision} to {configmap}")
