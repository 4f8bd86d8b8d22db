"""`jovial-guard policy ...`: the security admin's Rego workflow.

``lint`` is ``opa check --strict`` plus ``opa fmt`` (``--fmt-check`` fails on unformatted
files); ``test`` is ``opa test`` with coverage and a minimum. Both run the real ``opa``
binary on the real policy directory, so what passes here is what OPA will load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from ..errors import PolicyEngineUnavailable
from .opa_process import DEFAULT_POLICY_DIR, find_opa


def _opa() -> str:
    try:
        return find_opa()
    except PolicyEngineUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def lint_policies(policy_dir: Path, *, fmt_check: bool = True) -> tuple[bool, str]:
    """Strict compile check (and formatting check); returns (ok, report)."""
    opa = _opa()
    check = subprocess.run([opa, "check", "--strict", str(policy_dir)], capture_output=True, text=True)
    report = [check.stdout + check.stderr]
    ok = check.returncode == 0
    if fmt_check:
        fmt = subprocess.run([opa, "fmt", "--list", "--fail", str(policy_dir)], capture_output=True, text=True)
        if fmt.returncode != 0:
            ok = False
            report.append("not formatted (run `opa fmt -w policies/`):\n" + fmt.stdout + fmt.stderr)
    return ok, "".join(report).strip()


def test_policies(policy_dir: Path, *, min_coverage: float) -> tuple[bool, float, str]:
    """`opa test` with coverage; ok when every test passes and coverage >= min_coverage."""
    opa = _opa()
    run = subprocess.run([opa, "test", str(policy_dir), "--coverage", "--format", "json"], capture_output=True, text=True)
    try:
        coverage = float(json.loads(run.stdout)["coverage"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        coverage = 0.0
    verbose = subprocess.run([opa, "test", str(policy_dir)], capture_output=True, text=True)
    ok = run.returncode == 0 and verbose.returncode == 0 and coverage >= min_coverage
    return ok, coverage, (verbose.stdout + verbose.stderr).strip()


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
