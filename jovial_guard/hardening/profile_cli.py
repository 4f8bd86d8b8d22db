"""`jovial-guard profile`: record notebook syscalls, build the learned profile, compare.

::

    jovial-guard profile record              # run the workloads, write the recording
    jovial-guard profile build               # recording -> notebook-learned.json + review
    jovial-guard profile build --check       # exit 1 if the committed files drifted
    jovial-guard profile stats               # syscall counts side by side
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import JovialGuardError
from .audit_netlink import AuditUnavailable, SyscallNames
from .learn import (
    build_learned_profile,
    learned_profile_path,
    load_json,
    recording_path,
    render_review,
    review_path,
    stats_table,
)
from .seccomp import BASE_PROFILE, notebook_profile_path, render, validate_profile_file


def native_names(*profiles: dict[str, Any]) -> frozenset[str] | None:
    """Names in ``profiles`` that are x86_64 syscalls (libseccomp); None if it is missing."""
    try:
        resolver = SyscallNames()
    except AuditUnavailable:
        return None
    return resolver.native_names({n for p in profiles for r in p.get("syscalls", [])
                                  for n in r.get("names", [])})


@click.group()
def profile() -> None:
    """Seccomp profiles learned from what notebooks actually call."""


@profile.command("record")
@click.option("--workload", "workloads", multiple=True,
              help="Run only this workload (repeatable); default: all of them.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the recording [default: profiles/seccomp/recordings/"
                   "notebook.json].")
def record_cmd(workloads: tuple[str, ...], out: Path | None) -> None:
    """Run notebook workloads under a logging profile and write the syscalls they used.

    Needs root (audit netlink, the engine). Every workload runs in its own hardened
    container. If a workload fails or records were lost, the command fails, the previous
    recording stays, and this one is written beside it as NAME.failed.json to inspect.
    """
    from .recorder import WORKLOADS, record

    target = out or recording_path()
    command = "jovial-guard profile record" + "".join(
        f" --workload {shlex.quote(w)}" for w in workloads)
    if out is not None:
        command += f" --out {shlex.quote(str(out))}"
    try:
        chosen = tuple(workloads) or WORKLOADS
        result = record(workloads=chosen, command=command,
                        progress=lambda m: click.echo(m, err=True))
    except (JovialGuardError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    failed = [name for name, run in result["workloads"].items() if not run["ok"]]
    if failed or result["lost"] or result["pids_outside_container_namespace"]:
        # Keep the last good recording: write this one beside it for inspection only.
        target = target.with_name(target.stem + ".failed.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(result))
    click.echo(f"wrote {target}: {len(result['syscalls'])} distinct syscalls from "
               f"{result['records']} records, {result['lost']} lost")
    for name in failed:
        click.echo(f"workload {name} failed:\n{result['workloads'][name]['log_tail']}", err=True)
    if failed:
        raise click.ClickException(f"workloads failed: {', '.join(failed)}")
    if target.name.endswith(".failed.json"):
        raise click.ClickException("records were lost or came from outside the containers; "
                                   "record again")


@profile.command("build")
@click.option("--recording", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Recording to learn from [default: the committed one].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Learned profile [default: profiles/seccomp/notebook-learned.json].")
@click.option("--review", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Review text [default: profiles/seccomp/notebook-learned.diff].")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the files differ from what would be written.")
def build_cmd(recording: Path | None, out: Path | None, review: Path | None,
              check: bool) -> None:
    """Build the allowlist profile from a recording, with a review against the current one."""
    out = out or learned_profile_path()
    review = review or review_path()
    try:
        current = load_json(notebook_profile_path(), what="notebook profile")
        recorded = load_json(recording or recording_path(), what="recording")
        learned = build_learned_profile(current, recorded)
        engine = load_json(BASE_PROFILE, what="engine default profile") \
            if BASE_PROFILE.exists() else None
        native = native_names(current, learned, *([engine] if engine else []))
        text = render_review(current, learned, recorded, engine_default=engine, native=native)
    except JovialGuardError as exc:
        raise click.ClickException(str(exc)) from exc
    wanted = {out: render(learned), review: text}
    if check:
        stale = [str(p) for p, body in wanted.items()
                 if not p.exists() or p.read_text() != body]
        if stale:
            click.echo(f"out of date: {', '.join(stale)}; run: jovial-guard profile build",
                       err=True)
            sys.exit(1)
        click.echo("learned profile and review are up to date")
        return
    for path, body in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    try:
        validate_profile_file(out)
    except JovialGuardError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out} and {review}")
    click.echo(text.split("## no longer allowed")[0].split("\n\n", 1)[1].rstrip())


@profile.command("stats")
@click.argument("extra", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--policy-data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Policy data naming each notebook profile's seccomp profile "
                   "[default: policies/data.json].")
def stats_cmd(extra: tuple[Path, ...], as_json: bool, policy_data: Path | None) -> None:
    """Syscall counts of the engine default, the notebook profile and the learned one, and
    which notebook profiles the policy data runs under each."""
    from ..policy.opa_process import DEFAULT_POLICY_DIR
    from .learn import chosen_by, profile_stats

    named = {"engine default": BASE_PROFILE, "notebook": notebook_profile_path(),
             "notebook-learned": learned_profile_path()}
    named.update({path.name: path for path in extra})
    try:
        profiles = {name: load_json(path, what=name) for name, path in named.items()
                    if path.exists() or name not in ("engine default", "notebook-learned")}
        data = load_json(policy_data or DEFAULT_POLICY_DIR / "data.json", what="policy data")
    except JovialGuardError as exc:
        raise click.ClickException(str(exc)) from exc
    chosen = chosen_by(data.get("settings") or {})
    native = native_names(*profiles.values())
    if as_json:
        counts = {n: profile_stats(p, native=native) for n, p in profiles.items()}
        click.echo(json.dumps({"profiles": counts, "chosen_by": chosen}, indent=1))
    else:
        click.echo(stats_table(profiles, native=native), nl=False)
        click.echo("\nnotebook profiles under each seccomp profile (policy data):")
        for name, notebooks in chosen.items():
            click.echo(f"    {name}: {', '.join(notebooks) or 'none'}")
