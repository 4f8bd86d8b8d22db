"""`jovial-guard webhook`: run the admission webhook, make its certificates."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .tls import service_dns_names, write_webhook_certs


@click.group()
def webhook() -> None:
    """Kubernetes admission webhook (validate + mutate) backed by OPA."""


@webhook.command()
@click.option("--opa-url", default=None, help="OPA base URL, e.g. http://127.0.0.1:8181 (the sidecar); needed with --engine opa.")
@click.option("--engine", type=click.Choice(["opa", "wasm"]), default="opa", show_default=True, help="opa: ask the OPA at --opa-url. wasm: evaluate the compiled policy of the signed bundle at --bundle in each worker (verified with --bundle-key and --bundle-key-id, reloaded when it changes).")
@click.option("--bundle", default=None, help="With --engine wasm: the signed bundle, a path or the bundle service's URL (http://SERVICE/bundles/jovial_guard.tar.gz).")
@click.option("--bundle-key", type=click.Path(exists=True, dir_okay=False), default=None, help="With --engine wasm: the bundles' public key (PEM), the one the OPA sidecar verifies with.")
@click.option("--bundle-key-id", default=None, help="With --engine wasm: the key id the bundles must be signed with.")
@click.option("--policy-dir", type=click.Path(exists=True, file_okay=False), default=None, help="With --engine wasm instead of --bundle: compile this policy directory (the one the OPA sidecar loads, as `webhook prepare-policies` wrote it) once at start; its revision is the directory's.")
@click.option("--opa-token-file", type=click.Path(exists=True, dir_okay=False), help="File holding OPA's bearer token.")
@click.option("--opa-ca", type=click.Path(exists=True, dir_okay=False), help="CA bundle for an https OPA.")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False), help="Serving certificate (PEM); reloaded when it changes.")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False), help="Serving key (PEM).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on (HTTPS only).")
@click.option("--port", default=8443, show_default=True, type=int)
@click.option("--deadline", default=3.0, show_default=True, type=float, help="Seconds per review; below the webhook timeoutSeconds. Past it: deny.")
@click.option("--engine-deadline", default=2.5, show_default=True, type=float, help="Seconds per OPA query (below --deadline).")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes sharing the port (SO_REUSEPORT).")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Decision cache keyed by workload digest and policy revision.")
@click.option("--cache-entries", default=10000, show_default=True, type=int)
@click.option("--revision-interval", default=1.0, show_default=True, type=float, help="Seconds between policy revision checks (cache invalidation bound).")
@click.option("--expected-revision", default=None, help="Ready only when OPA serves this revision.")
@click.option("--expected-policy-dir", type=click.Path(exists=True, file_okay=False), help="Compute the expected revision from this policies/ directory.")
@click.option("--require-hardened/--no-require-hardened", default=True, show_default=True, help="/validate refuses objects that still need the hardening patch.")
@click.option("--allow-unsupported-kinds", is_flag=True, default=False, help="Admit kinds without a pod template (default: deny them; the shipped configurations never route them).")
@click.option("--decision-log", type=click.Path(dir_okay=False), default=None, help="Append /mutate decisions (masked inputs) to this JSON-lines decision log; with --workers N each worker writes PATH.<pid>.")
@click.option("--namespace-labels/--no-namespace-labels", default=False, show_default=True, help="Read each namespace's enforcement-mode labels (jovial-guard.io/mode, mode.jovial-guard.io/<rule>) through the API server; needs get on namespaces. Unreadable labels deny.")
@click.option("--namespace-labels-ttl", default=10.0, show_default=True, type=float, help="Seconds a namespace's labels are cached (how soon a label change applies).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None, help="Kubeconfig for the namespace reads (default: in-cluster credentials).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True, help="JSON lines (decision id, revision, request uid as fields) or plain text.")
def serve(
    opa_url: str | None,
    engine: str,
    bundle: str | None,
    bundle_key: str | None,
    bundle_key_id: str | None,
    policy_dir: str | None,
    opa_token_file: str | None,
    opa_ca: str | None,
    cert: str,
    key: str,
    host: str,
    port: int,
    deadline: float,
    engine_deadline: float,
    workers: int,
    cache: bool,
    cache_entries: int,
    revision_interval: float,
    expected_revision: str | None,
    expected_policy_dir: str | None,
    require_hardened: bool,
    allow_unsupported_kinds: bool,
    decision_log: str | None,
    namespace_labels: bool,
    namespace_labels_ttl: float,
    kubeconfig: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve /validate, /mutate, /healthz, /readyz and /metrics over HTTPS.

    An OPA whose policies carry no revision (started by hand with `opa run --server
    policies/`) is served, reported as "unversioned", and /readyz stays not ready until a
    revision appears: a bundle-fed OPA has no revision either until its first bundle
    activates, so refusing to start would turn that normal start-up race into a crash
    loop. The log and /readyz say what to load.
    """
    from ..jsonlog import configure
    from ..policy.client import OpaEndpoint
    from .server import WebhookConfig
    from .server import serve as run

    if engine == "opa":
        if not opa_url:
            raise click.UsageError("--engine opa needs --opa-url (the OPA sidecar), e.g. http://127.0.0.1:8181")
        OpaEndpoint(opa_url).parts()  # a wrong URL stops here, before any worker starts
    elif policy_dir:
        if bundle or bundle_key or bundle_key_id:
            raise click.UsageError("--engine wasm takes either --policy-dir or --bundle with --bundle-key and "
                                   "--bundle-key-id, not both")
    elif not (bundle and bundle_key and bundle_key_id):
        raise click.UsageError("--engine wasm needs --bundle, --bundle-key and --bundle-key-id (decisions come "
                               "only from a signed bundle), or --policy-dir (the sidecar's policy directory)")

    configure(log_level, json_format=log_format == "json")
    if expected_policy_dir and not expected_revision:
        from ..policy.opa_process import policy_revision

        expected_revision = policy_revision(Path(expected_policy_dir))
    token = Path(opa_token_file).read_text().strip() if opa_token_file else os.environ.get("JOVIAL_GUARD_OPA_TOKEN")
    config = WebhookConfig(
        opa_url=opa_url or "",
        engine=engine,
        bundle=bundle,
        bundle_public_key=Path(bundle_key) if bundle_key else None,
        bundle_key_id=bundle_key_id,
        policy_dir=Path(policy_dir) if policy_dir else None,
        opa_token=token or None,
        opa_ca=opa_ca,
        cert=Path(cert),
        key=Path(key),
        host=host,
        port=port,
        deadline=deadline,
        engine_deadline=min(engine_deadline, deadline * 0.9),
        workers=workers,
        cache_enabled=cache,
        cache_entries=cache_entries,
        revision_interval=revision_interval,
        expected_revision=expected_revision,
        require_hardened=require_hardened,
        allow_unsupported_kinds=allow_unsupported_kinds,
        decision_log_path=Path(decision_log) if decision_log else None,
        namespace_labels=namespace_labels,
        namespace_labels_ttl=namespace_labels_ttl,
        kubeconfig=kubeconfig,
    )
    raise SystemExit(run(config))


@webhook.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--service", default="jovial-guard-webhook", show_default=True, help="Service name of the webhook.")
@click.option("--namespace", default="jhub", show_default=True, help="Namespace of the Service.")
@click.option("--dns", multiple=True, help="Extra DNS names for the certificate (repeatable).")
@click.option("--ip", multiple=True, help="IP addresses for the certificate (repeatable), e.g. 127.0.0.1.")
@click.option("--days", default=90, show_default=True, type=int)
@click.option("--new-ca", is_flag=True, default=False, help="Make a new CA even if DIRECTORY has one.")
def certs(directory: str, service: str, namespace: str, dns: tuple[str, ...], ip: tuple[str, ...], days: int, new_ca: bool) -> None:
    """Create a CA (once) and a serving certificate in DIRECTORY; rerun to rotate."""
    names = service_dns_names(service, namespace) + list(dns)
    paths = write_webhook_certs(directory, dns_names=names, ip_addresses=ip, days=days, reuse_ca=not new_ca)
    click.echo(f"CA:          {paths.ca_cert} (caBundle of the webhook configurations)")
    click.echo(f"certificate: {paths.cert}")
    click.echo(f"key:         {paths.key}")


@webhook.command("prepare-policies")
@click.option("--source", type=click.Path(exists=True, file_okay=False), default=None, help="Policy directory to copy (default: the one shipped in the package).")
@click.option("--overlay", type=click.Path(exists=True, dir_okay=False), default=None, help="JSON merged over data.json (the chart's policy data).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Fresh directory to write the policies into.")
@click.option("--meta", type=click.Path(dir_okay=False), default=None, help="Also write the revision as data.jovial_guard_meta here (JSON).")
def prepare_policies(source: str | None, overlay: str | None, out: str, meta: str | None) -> None:
    """Copy the policies, merge the deployment's settings into data.json, print the revision."""
    import json

    from ..policy.opa_process import DEFAULT_POLICY_DIR
    from .policy_overlay import OverlayError
    from .policy_overlay import prepare_policies as prepare

    try:
        revision = prepare(Path(source) if source else DEFAULT_POLICY_DIR, Path(overlay) if overlay else None, Path(out))
    except OverlayError as exc:
        raise click.ClickException(str(exc)) from exc
    if meta:
        Path(meta).write_text(json.dumps({"jovial_guard_meta": {"revision": revision}}))
    click.echo(revision)


@webhook.command("wait-ready")
@click.option("--url", required=True, help="The webhook's /readyz, e.g. https://jovial-guard-webhook.jovial-guard.svc/readyz.")
@click.option("--ca", "ca_file", required=True, type=click.Path(exists=True, dir_okay=False), help="CA that signed the serving certificate.")
@click.option("--timeout", default=300.0, show_default=True, type=float)
def wait_ready(url: str, ca_file: str, timeout: float) -> None:
    """Wait until the webhook answers /readyz (the chart creates its configurations after)."""
    from .cluster_hooks import HookError
    from .cluster_hooks import wait_ready as wait

    try:
        waited = wait(url, ca_file=Path(ca_file), timeout=timeout)
    except HookError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{url} ready after {waited:.1f}s")


@webhook.command("delete-configurations")
@click.argument("name")
@click.option("--server", default=None, help="API server URL (default: the in-cluster one).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None, help="Bearer token (default: the pod's service account).")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False), default=None, help="API server CA (default: the pod's).")
def delete_configurations(name: str, server: str | None, token_file: str | None, ca_file: str | None) -> None:
    """Delete the Mutating/ValidatingWebhookConfiguration NAME (the chart's pre-delete hook)."""
    from .cluster_hooks import HookError
    from .cluster_hooks import delete_configurations as delete

    try:
        deleted = delete(name, server=server, token_file=Path(token_file) if token_file else None,
                         ca_file=Path(ca_file) if ca_file else None)
    except HookError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("deleted: " + (", ".join(deleted) or "nothing (already absent)"))


@webhook.command()
@click.option("--data", "data_json", default="policies/data.json", show_default=True, type=click.Path(exists=True, dir_okay=False), help="The policy data file holding settings.egress.")
@click.option("--namespace", default="jhub", show_default=True, help="The hub's namespace (where notebook pods run).")
def netpol(data_json: str, namespace: str) -> None:
    """Print the notebook NetworkPolicies rendered from settings.egress, as YAML."""
    import yaml

    from ..hardening.egress_netpol import load_settings, render_network_policies

    policies = render_network_policies(load_settings(data_json), namespace=namespace)
    click.echo(
        "# Generated by `jovial-guard webhook netpol` from policies/data.json: do not edit by hand.\n"
        + yaml.safe_dump_all(policies, sort_keys=False),
        nl=False,
    )
