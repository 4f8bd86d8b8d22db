"""`jovial-guard check FILE... [--format jsonl|table]`: decide manifests with the real policy.

Contract (other tools call it exactly like this): one JSON object per document per line
with file, index, allowed, reasons, patch, policy_revision; plus ``item`` for an item of a
``kind: List``, ``error`` for a malformed document and ``applicable: false`` with ``kind``
for an object without a pod template (a Service, a ConfigMap: reported, not decided).
``-`` reads standard input, so ``kubectl get pods -o yaml | jovial-guard check -`` works.
Exit 0 all allowed (or not applicable), 1 any denied, 2 usage error, any malformed
document (each named on stderr; the rest of the batch is still decided) or a document the
policy engine could not decide (OPA down or past the deadline: denied, named on stderr).
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from ..decision import ENGINE_UNAVAILABLE
from ..errors import Misconfigured, PolicyEngineUnavailable
from .check import STDIN, CheckResult, exit_code, run_check
from .client import OpaEndpoint
from .opa_process import DEFAULT_POLICY_DIR, ManagedOpa, policy_revision
from .wasm_bundle import PolicyArtifact, compile_directory, load_verified
from .wasm_engine import WasmConnection


def _print_table(results: list[CheckResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="jovial-guard check")
    for column in ("file", "#", "decision", "reasons", "patch ops", "revision"):
        table.add_column(column)
    for r in results:
        if not r.applicable:
            verdict = f"n/a ({r.kind})"
        else:
            verdict = "[green]allowed[/]" if r.allowed else ("[red]error[/]" if r.error else "[red]denied[/]")
        reasons = "\n".join(f"{x['rule']}: {x['message']}" for x in r.reasons) or "-"
        position = str(r.index) if r.item is None else f"{r.index}.{r.item}"
        table.add_row(r.file, position, verdict, reasons, str(len(r.patch)), r.policy_revision)
    Console(width=max(120, Console().width)).print(table)


def _artifact(policy_dir: Path, bundle: str | None, key: str | None, key_id: str | None) -> PolicyArtifact:
    """The compiled policy: from a verified bundle, or compiled from the policy directory
    (the same files a managed OPA would load, with the same revision)."""
    if bundle and key and key_id:
        return load_verified(Path(bundle).read_bytes(), public_key=Path(key), key_id=key_id)
    return compile_directory(policy_dir, policy_revision(policy_dir))


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
@click.option("--opa-url", envvar="JOVIAL_GUARD_OPA_URL", help="Use this OPA instead of starting one.")
@click.option("--opa-token", envvar="JOVIAL_GUARD_OPA_TOKEN", help="Bearer token for --opa-url.")
@click.option("--opa-ca", envvar="JOVIAL_GUARD_OPA_CA", type=click.Path(exists=True, dir_okay=False), help="CA bundle for an https --opa-url.")
@click.option("--policy-dir", type=click.Path(file_okay=False, exists=True), default=str(DEFAULT_POLICY_DIR), show_default=True, help="Policies to decide with (compiled, or loaded by the managed OPA).")
@click.option("--engine", type=click.Choice(["wasm", "opa"]), default="wasm", show_default=True, help="wasm: OPA's compilation of the policies (opa build -t wasm), evaluated in this process. opa: start an OPA server on them (implied by --opa-url).")
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False), default=None, help="Decide with this signed bundle's compiled policy instead of --policy-dir (needs --bundle-key and --bundle-key-id).")
@click.option("--bundle-key", type=click.Path(exists=True, dir_okay=False), default=None, help="Public key (PEM) the --bundle must be signed with.")
@click.option("--bundle-key-id", default=None, help="Key id the --bundle must be signed with.")
@click.option("--deadline", type=float, default=5.0, show_default=True, help="Seconds per decision before failing closed.")
def check(
    files: tuple[str, ...],
    fmt: str,
    opa_url: str | None,
    opa_token: str | None,
    opa_ca: str | None,
    policy_dir: str,
    engine: str,
    bundle: str | None,
    bundle_key: str | None,
    bundle_key_id: str | None,
    deadline: float,
) -> None:
    """Decide Pods, workload objects or AdmissionReviews in FILES (YAML/JSON, multi-document, '-' for stdin)."""
    if files.count(STDIN) > 1:
        raise click.UsageError("'-' (standard input) can be given only once")
    if bundle and not (bundle_key and bundle_key_id):
        raise click.UsageError("--bundle needs --bundle-key and --bundle-key-id (only a verified bundle is used)")
    try:
        with ExitStack() as stack:
            source: OpaEndpoint | WasmConnection
            if opa_url:
                source = OpaEndpoint(opa_url, token=opa_token, ca_file=opa_ca)
            elif engine == "wasm" or bundle:
                source = WasmConnection.from_artifact(_artifact(Path(policy_dir), bundle, bundle_key, bundle_key_id),
                                                      deadline=deadline)
            else:
                managed = stack.enter_context(ManagedOpa(Path(policy_dir)))
                source = OpaEndpoint(managed.url)
            results = run_check(list(files), source, deadline=deadline)
    except (PolicyEngineUnavailable, Misconfigured) as exc:
        click.echo(f"jovial-guard check: {exc}", err=True)
        sys.exit(2)
    if not results:
        click.echo(f"jovial-guard check: no documents in {', '.join(files)}", err=True)
    undecided = [r for r in results if r.reasons and r.reasons[0]["rule"] == ENGINE_UNAVAILABLE]
    if undecided:
        click.echo(f"jovial-guard check: {len(undecided)} of {len(results)} documents could not be decided "
                   f"(denied): {undecided[0].reasons[0]['message']}", err=True)
    for result in results:
        if result.error is not None:
            item = "" if result.item is None else f" item {result.item}"
            click.echo(f"{result.file}: document {result.index}{item}: {result.error}", err=True)
    if fmt == "jsonl":
        out = sys.stdout
        for result in results:
            out.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
        out.flush()
    else:
        _print_table(results)
    # OPA down or too slow is not a verdict: the results deny (fail closed), the exit code
    # says "could not decide" rather than "denied".
    sys.exit(2 if undecided else exit_code(results))

