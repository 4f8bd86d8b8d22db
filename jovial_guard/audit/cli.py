"""`jovial-guard audit serve | verify | query`."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click
import orjson


@click.group()
def audit() -> None:
    """Runtime audit: intake, tamper-evident log, verification, queries."""


@audit.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True, help="Audit log directory.")
@click.option("--listen", default="127.0.0.1:8765", show_default=True, help="HOST:PORT of the intake.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Ed25519 signing key (created if missing). Default: DIR/keys/signing.key.")
@click.option("--registry", "registry_path", type=click.Path(path_type=Path), default=None,
              help="Spawn registry (SQLite). Default: DIR/spawns.sqlite.")
@click.option("--token-file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Require 'Authorization: Bearer <token>' on intake routes.")
@click.option("--rules", "rules_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Responses rules (YAML).")
@click.option("--dry-run/--no-dry-run", default=None, help="Override the rules file's dry_run.")
@click.option("--hub-api-url", default=None, help="JupyterHub API, e.g. http://127.0.0.1:8081/hub/api.")
@click.option("--hub-token-file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Hub API token with admin:servers (else $JUPYTERHUB_API_TOKEN).")
@click.option("--credentials-state", type=click.Path(path_type=Path), default=None,
              help="Credentials issuer state directory (enables revoke_storage).")
@click.option("--credentials-keys", type=click.Path(path_type=Path), default=None,
              help="Credentials key directory (kek.json); default: STATE/../keys.")
@click.option("--engine-url", default=None, help="Docker-API socket to follow, unix:///.../podman.sock.")
@click.option("--engine-events-file", type=click.Path(path_type=Path), default=None,
              help="podman events file to follow (events_logger=file).")
@click.option("--seccomp-socket", type=click.Path(path_type=Path), default=None,
              help="Run the seccomp agent on this unix socket: containers whose profile names it "
                   "hand it their refused syscalls; it answers EPERM and records each one.")
@click.option("--max-file-bytes", type=int, default=64 * 1024 * 1024, show_default=True)
@click.option("--checkpoint-every", type=int, default=10_000, show_default=True)
@click.option("--checkpoint-interval", type=float, default=1.0, show_default=True)
@click.option("--attest-interval", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds between attestations of every running server (and one at each start); "
                   "needs --engine-url. 0 turns attestation off.")
def serve(directory: Path, listen: str, key_path: Path | None, registry_path: Path | None,
          token_file: Path | None, rules_path: Path | None, dry_run: bool | None, hub_api_url: str | None,
          hub_token_file: Path | None, credentials_state: Path | None, credentials_keys: Path | None,
          engine_url: str | None,
          engine_events_file: Path | None, seccomp_socket: Path | None, max_file_bytes: int, checkpoint_every: int,
          checkpoint_interval: float, attest_interval: float) -> None:
    """Run the intake and write the audit log until SIGTERM."""
    from .responses import RulesInvalid
    from .runner import AuditSettings, serve_forever
    from .seccomp_agent import SeccompAgentUnavailable

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("use HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--listen")
    hub_token = hub_token_file.read_text().strip() if hub_token_file else os.environ.get("JUPYTERHUB_API_TOKEN")
    settings = AuditSettings(
        directory=directory, key_path=key_path, registry_path=registry_path, host=host, port=int(port),
        token=token_file.read_text().strip() if token_file else None, rules_path=rules_path,
        dry_run=dry_run, hub_api_url=hub_api_url, hub_token=hub_token, credentials_state=credentials_state,
        credentials_keys=credentials_keys, engine_url=engine_url, engine_events_file=engine_events_file, max_file_bytes=max_file_bytes,
        checkpoint_every=checkpoint_every, checkpoint_interval=checkpoint_interval,
        seccomp_socket=seccomp_socket,
        attest_interval=attest_interval,
    )
    try:
        try:
            import uvloop  # pinned dependency; the plain asyncio loop works too, slower
        except ImportError:
            asyncio.run(serve_forever(settings))
        else:
            uvloop.run(serve_forever(settings))
    except RulesInvalid as exc:
        raise click.ClickException(f"responses file: {exc}") from None
    except SeccompAgentUnavailable as exc:
        raise click.ClickException(f"seccomp agent: {exc}") from None


@audit.command()
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--public-key", type=click.Path(exists=True, path_type=Path), default=None,
              help="Trusted copy of the signing public key. Default: DIR/keys/signing.pub.")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per CPU).")
@click.option("--require-signed", is_flag=True,
              help="Also fail if any record is not covered by a signed checkpoint (for a closed log: "
                   "a deleted or truncated checkpoints.log leaves records only chained).")
def verify(directory: Path, public_key: Path | None, workers: int | None, require_signed: bool) -> None:
    """Check every record and signed checkpoint; exit 1 naming the first bad record."""
    from .checkpoint import InvalidCheckpoint, load_public_key
    from .errors import LogVerificationFailed
    from .verify import verify_log

    key_path = public_key or directory / "keys" / "signing.pub"
    try:
        key = load_public_key(key_path)
    except (OSError, ValueError, InvalidCheckpoint) as exc:
        raise click.ClickException(f"cannot load public key {key_path}: {exc}") from None
    try:
        report = verify_log(directory, key, workers=workers)
    except LogVerificationFailed as exc:
        click.echo(f"FAILED: {exc}", err=True)
        sys.exit(1)
    if require_signed and report.unsigned_tail:
        click.echo(f"FAILED: records {report.signed_records + 1}..{report.records} are not covered by a signed "
                   f"checkpoint (first bad record: {report.signed_records + 1})", err=True)
        sys.exit(1)
    click.echo(f"OK: {report.records} records in {report.files} file(s), {report.checkpoints} signed "
               f"checkpoint(s) covering {report.signed_records} records")
    for note in report.notes:
        click.echo(f"note: {note}")


@audit.command()
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--user", default=None, help="Hub user.")
@click.option("--unattributed", is_flag=True, help="Only events no user could be found for.")
@click.option("--rule", default=None, help="Exact rule name, e.g. 'Terminal shell in container'.")
@click.option("--rule-contains", default=None, help="Case-insensitive substring of the rule name.")
@click.option("--priority", default=None, help="Exact priority (Emergency..Debug).")
@click.option("--min-priority", default=None, help="This priority or more severe.")
@click.option("--kind", default=None, type=click.Choice(["falco", "engine", "hub", "decision", "response",
                                                         "intake", "system", "seccomp", "attestation"]))
@click.option("--since", default=None, help="RFC 3339 time or relative (15m, 2h, 1d).")
@click.option("--until", default=None, help="RFC 3339 time or relative.")
@click.option("--limit", type=int, default=None)
def query(directory: Path, user: str | None, unattributed: bool, rule: str | None, rule_contains: str | None,
          priority: str | None, min_priority: str | None, kind: str | None, since: str | None,
          until: str | None, limit: int | None) -> None:
    """Print matching records as JSON lines (oldest first)."""
    from .events import MalformedEvent, canonical_priority
    from .query import Query, parse_time, run_query

    try:
        for value in (priority, min_priority):
            if value is not None:
                canonical_priority(value)
        q = Query(user=user, unattributed=unattributed, rule=rule, rule_contains=rule_contains,
                  priority=priority, min_priority=min_priority, kind=kind,
                  since=parse_time(since) if since else None, until=parse_time(until) if until else None)
    except (ValueError, MalformedEvent) as exc:
        raise click.BadParameter(str(exc)) from None
    out = sys.stdout.buffer
    for record in run_query(directory, q, limit=limit):
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
