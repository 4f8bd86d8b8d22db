"""`jovial-guard creds`: issue, list, revoke, rotate-key, rewrap, verify (and init, plan).

Every credentials error becomes a one-line message; a grant that fails verification exits
1 (the answer is no), any other error (not initialised, a bad argument, a loose key file)
is a mistake and exits 2. An invalid token says only "invalid grant" (no oracle), the other
refusals say what is wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import paths
from ..errors import JovialGuardError
from .errors import GrantRefused, InvalidGrant
from .issuer import DEFAULT_LIFETIME, Issuer


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _readable(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except JovialGuardError as exc:
            # A grant that fails verification is an answer (1); anything else a mistake (2).
            error = click.ClickException(f"{type(exc).__name__}: {exc}")
            error.exit_code = 1 if isinstance(exc, (InvalidGrant, GrantRefused)) else getattr(exc, "exit_code", 2)
            raise error from None

    return wrapper


def _issuer(ctx: click.Context, *, create: bool = False) -> Issuer:
    obj = ctx.obj
    return Issuer.from_directory(
        Path(obj["state_dir"]), keyring_path=Path(obj["key_dir"]) / "kek.json", lifetime=obj["lifetime"], create=create
    )


@click.group()
@click.option(
    "--state-dir",
    envvar="JOVIAL_GUARD_CREDS_STATE",
    default=lambda: str(paths.credentials_state_dir()),
    show_default="the hub's: HUB_STATE/credentials",
    help="Grant envelopes and revocation list.",
)
@click.option(
    "--key-dir",
    envvar="JOVIAL_GUARD_CREDS_KEYS",
    default=lambda: str(paths.credentials_key_dir()),
    show_default="the hub's: HUB_STATE/credentials-keys",
    help="kek.json (mode 0600) and the signing key.",
)
@click.option(
    "--lifetime",
    type=click.IntRange(min=60),
    default=DEFAULT_LIFETIME,
    show_default=True,
    help="Seconds a new grant lives.",
)
@click.pass_context
def creds(ctx: click.Context, state_dir: str, key_dir: str, lifetime: int) -> None:
    """Per-user storage credentials: encrypted at rest, expiring, revocable."""
    ctx.obj = {"state_dir": state_dir, "key_dir": key_dir, "lifetime": lifetime}


@creds.command()
@click.pass_context
@_readable
def init(ctx: click.Context) -> None:
    """Create the keyring (first key-encryption key) and the issuer signing key."""
    issuer = _issuer(ctx, create=True)
    click.echo(f"keyring ready: active key {issuer.keyring.active_key_id} in {ctx.obj['key_dir']}/kek.json (mode 0600)")


@creds.command()
@click.option("--user", required=True)
@click.option("--uid", type=int, required=True)
@click.option("--gid", type=int, required=True)
@click.option("--fileset", required=True, help="Relative to the storage root, e.g. home/alice.")
@click.option("--mode", type=click.Choice(["ro", "rw"]), required=True)
@click.option("--mount-path", default="/lustre/home", show_default=True, help="Where the container sees it.")
@click.pass_context
@_readable
def issue(ctx: click.Context, user: str, uid: int, gid: int, fileset: str, mode: str, mount_path: str) -> None:
    """Issue a grant; prints its serial, expiry and (encrypted) token."""
    issued = _issuer(ctx).issue(
        user=user,
        uid=uid,
        gid=gid,
        fileset=fileset,
        mode=mode,  # type: ignore[arg-type]
        mount_path=mount_path,
    )
    g = issued.grant
    click.echo(
        f"serial:  {g.serial}\nuser:    {g.user} ({g.uid}:{g.gid})\nfileset: {g.fileset} ({g.mode}) at {g.mount_path}\n"
        f"expires: {_when(g.expires)}\ntoken:   {issued.token}"
    )


@creds.command(name="list")
@click.pass_context
@_readable
def list_(ctx: click.Context) -> None:
    """Every stored grant with its status (no decryption needed)."""
    issuer = _issuer(ctx)
    now = int(issuer.clock())
    rows = issuer.list_grants()
    if not rows:
        click.echo("no grants")
        return
    click.echo(f"{'SERIAL':32}  {'USER':12} {'FILESET':24} MODE {'EXPIRES':20} KEY  STATUS")
    for serial, header, revoked in rows:
        if header is None:
            click.echo(f"{serial:32}  (unreadable envelope)")
            continue
        status = f"revoked: {revoked.reason}" if revoked else "expired" if header["expires"] <= now else "live"
        click.echo(
            f"{serial:32}  {header['user']:12} {header['fileset']:24} {header['mode']:4} "
            f"{_when(header['expires']):20} {header['key_id']:4} {status}"
        )


@creds.command()
@click.option("--user", default=None, help="Revoke every grant of this user.")
@click.option("--serial", default=None, help="Revoke one grant.")
@click.option("--reason", required=True, help="Why (logged, shown to the user).")
@click.pass_context
@_readable
def revoke(ctx: click.Context, user: str | None, serial: str | None, reason: str) -> None:
    """Revoke grants; node agents unmount on their next check."""
    if (user is None) == (serial is None):
        raise click.UsageError("give exactly one of --user or --serial")
    serials = _issuer(ctx).revoke(user=user, serial=serial, reason=reason)
    click.echo(f"revoked {len(serials)} grant(s)" + ("".join(f"\n  {s}" for s in serials)))


@creds.command(name="rotate-key")
@click.pass_context
@_readable
def rotate_key(ctx: click.Context) -> None:
    """Add a new key-encryption key; new grants use it, old ones stay readable until rewrap."""
    issuer = _issuer(ctx)
    rotate = getattr(issuer.keyring, "rotate", None)
    if rotate is None:
        raise click.ClickException("this key provider rotates keys in the KMS, not here")
    key_id = rotate()
    click.echo(f"active key is now {key_id}; run `jovial-guard creds rewrap` to move existing grants to it")


@creds.command()
@click.option("--retire-old", is_flag=True, help="Afterwards, remove keys no grant uses.")
@click.pass_context
@_readable
def rewrap(ctx: click.Context, retire_old: bool) -> None:
    """Re-seal every grant under the active key (atomic per grant; no downtime)."""
    issuer = _issuer(ctx)
    report = issuer.rewrap()
    click.echo(
        f"rewrapped {report.rewrapped}, already on {report.key_id}: {report.already_current}, "
        f"unreadable: {len(report.failed)}"
    )
    for serial in report.failed:
        click.echo(f"  unreadable (tampered or unknown key): {serial}", err=True)
    if retire_old:
        for key_id in issuer.keyring.key_ids():
            if key_id != issuer.keyring.active_key_id and not issuer.keys_in_use().get(key_id):
                issuer.retire_key(key_id)
                click.echo(f"retired key {key_id}")


@creds.command()
@click.argument("token_or_serial")
@click.option("--user", required=True, help="Who is presenting it.")
@click.option("--fileset", default=None, help="The fileset it is presented for.")
@click.pass_context
@_readable
def verify(ctx: click.Context, token_or_serial: str, user: str, fileset: str | None) -> None:
    """Check a token (or a stored grant by serial): exit 0 and print it, or exit 1 with why not."""
    issuer = _issuer(ctx)
    token: str | bytes = token_or_serial
    if len(token_or_serial) == 32 and all(c in "0123456789abcdef" for c in token_or_serial):
        token = issuer.store.get(token_or_serial)
    grant = issuer.verify(token, user=user, fileset=fileset)
    click.echo(f"valid: {grant.serial} {grant.user} {grant.fileset} ({grant.mode}) until {_when(grant.expires)}")


@creds.command()
@click.argument("serial")
@click.option("--fsname", required=True, help="Lustre file system name.")
@click.option("--mgs-nid", "mgs_nids", multiple=True, required=True, help="e.g. 10.0.0.1@tcp")
@click.option("--client-nid", "client_nids", multiple=True, required=True, help="NID the user's mounts come from.")
@click.option("--fs-uid", type=int, default=None, help="Filesystem uid the grant's uid maps to (default: same).")
@click.option("--fs-gid", type=int, default=None, help="Filesystem gid the grant's gid maps to (default: same).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write the key files here (mode 0600): they contain secret key data.",
)
@click.pass_context
@_readable
def plan(
    ctx: click.Context,
    serial: str,
    fsname: str,
    mgs_nids: tuple[str, ...],
    client_nids: tuple[str, ...],
    fs_uid: int | None,
    fs_gid: int | None,
    out: str | None,
) -> None:
    """Render the Lustre administration plan (nodemap + SSK) for a stored grant."""
    from ..atomic import atomic_write, ensure_private_dir
    from .backends.lustre import render_plan

    issuer = _issuer(ctx)
    grant = issuer.check(issuer.load(serial), now=int(issuer.clock()))
    try:
        rendered = render_plan(
            grant, fsname=fsname, mgs_nids=mgs_nids, client_nids=client_nids, fs_uid=fs_uid, fs_gid=fs_gid
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(rendered.render(), nl=False)
    if out:
        directory = ensure_private_dir(Path(out))
        atomic_write(directory / "plan.sh", rendered.render().encode(), mode=0o600)
        for name, (mode, content) in rendered.key_files.items():
            atomic_write(directory / name, content, mode=mode)
        click.echo(f"# written to {directory} (plan.sh and {len(rendered.key_files)} key file(s), mode 0600)")
