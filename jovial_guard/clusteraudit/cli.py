"""`jovial-guard audit-cluster`: decide every running pod against the current revision.

One-shot by default (prints a summary, writes PolicyReports, exits 1 when a pod violates
an enforced rule, so a pipeline can gate on it); ``--interval SECONDS`` repeats forever
and serves the gauges on ``--metrics-port``, for a Deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .metrics import ClusterAuditMetrics
from .report import build_reports, findings


async def audit_once(
    *,
    opa_url: str,
    opa_token: str | None,
    kubeconfig: str | None,
    namespaces: tuple[str, ...],
    auditor: str,
    write: bool,
    metrics: ClusterAuditMetrics | None = None,
) -> dict[str, Any]:
    """One pass: read, decide, report. Returns the summary printed by the CLI."""
    from kubernetes_asyncio import client, config

    from ..policy.client import OpaConnection, OpaEndpoint
    from ..policy.engine import PolicyEngine
    from .scan import decide_pods, read_cluster, write_reports

    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    async with client.ApiClient(configuration=cfg) as api, OpaConnection(OpaEndpoint(opa_url, token=opa_token), timeout=5.0) as conn:
        engine = PolicyEngine(conn, deadline=5.0)
        revision = await engine.revision()
        pods, labels = await read_cluster(api, namespaces)
        verdicts = await decide_pods(engine, pods, labels, auditor=auditor)
        reports = build_reports(verdicts, revision=revision, timestamp=int(time.time()))
        if write:
            await write_reports(api, reports, scope=namespaces)
    found = findings(verdicts)
    if metrics is not None:
        metrics.update(found, dict(Counter(v.namespace for v in verdicts)), revision=revision, finished=time.time())
    by_key = Counter((f.namespace, f.rule, f.mode) for f in found)
    users = Counter((f.namespace, f.user or "-", f.rule) for f in found)
    return {
        "revision": revision,
        "pods": len(verdicts),
        "violations": [{"namespace": ns, "rule": r, "mode": m, "pods": n} for (ns, r, m), n in sorted(by_key.items())],
        "by_user": [{"namespace": ns, "user": u, "rule": r, "pods": n} for (ns, u, r), n in sorted(users.items())],
        "reports": sorted(reports),
        "enforced": sum(n for (_, _, m), n in by_key.items() if m in ("enforce", "error")),
    }


@click.command("audit-cluster")
@click.option("--opa-url", required=True, help="OPA serving the current policy revision, e.g. http://127.0.0.1:8181.")
@click.option("--opa-token-file", type=click.Path(exists=True, dir_okay=False), help="File holding OPA's bearer token.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None, help="Kubeconfig (default: in-cluster credentials).")
@click.option("--namespace", "namespaces", multiple=True, help="Audit only this namespace (repeatable; default: all).")
@click.option("--auditor", default="system:serviceaccount:jhub:jovial-guard-audit", show_default=True, help="The request user the decisions are made for (never trusted as the hub).")
@click.option("--write/--no-write", default=True, show_default=True, help="Write PolicyReports (wgpolicyk8s.io/v1alpha2; the CRD is in deploy/helm/jovial-guard/crds/).")
@click.option("--interval", type=float, default=None, help="Repeat every SECONDS (a Deployment); default: run once.")
@click.option("--metrics-port", type=int, default=9090, show_default=True, help="With --interval: serve /metrics on this port.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
def audit_cluster(opa_url: str, opa_token_file: str | None, kubeconfig: str | None, namespaces: tuple[str, ...], auditor: str,
                  write: bool, interval: float | None, metrics_port: int, output: str, log_level: str) -> None:
    """Decide every existing pod against the current policy revision; report violations."""
    from ..jsonlog import configure

    configure(log_level)
    token = Path(opa_token_file).read_text().strip() if opa_token_file else os.environ.get("JOVIAL_GUARD_OPA_TOKEN")
    if interval is not None and interval <= 0:
        raise click.BadParameter("must be positive seconds, e.g. 300", param_hint="--interval")
    kwargs = dict(opa_url=opa_url, opa_token=token or None, kubeconfig=kubeconfig, namespaces=namespaces, auditor=auditor, write=write)
    if interval is None:
        try:
            summary = asyncio.run(audit_once(**kwargs))  # type: ignore[arg-type]
        except Exception as exc:
            raise click.ClickException(f"cluster audit failed: {type(exc).__name__}: {exc}") from exc
        _print(summary, output)
        raise SystemExit(1 if summary["enforced"] else 0)
    asyncio.run(_periodic(kwargs, interval, metrics_port, output))


async def _periodic(kwargs: dict[str, Any], interval: float, port: int, output: str) -> None:
    from prometheus_client import start_http_server

    metrics = ClusterAuditMetrics()
    start_http_server(port, registry=metrics.registry)
    while True:
        try:
            _print(await audit_once(**kwargs, metrics=metrics), output)
        except Exception as exc:  # noqa: BLE001 - keep running; the next pass may succeed
            metrics.runs.labels("error").inc()
            click.echo(f"cluster audit failed: {type(exc).__name__}: {exc}", err=True)
        await asyncio.sleep(interval)


def _print(summary: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(summary, sort_keys=True))
        return
    click.echo(f"policy revision {summary['revision']}: {summary['pods']} pods decided")
    for v in summary["violations"]:
        click.echo(f"  {v['namespace']:<20} {v['rule']:<36} {v['mode']:<8} {v['pods']} pod(s)")
    if not summary["violations"]:
        click.echo("  no violations")
