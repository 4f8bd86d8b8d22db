"""`opa check`, `opa fmt` and `opa test` on a policy directory, as plain functions.

Shared by `jovial-guard policy lint|test` and by `deploy`, which refuses a candidate that
fails either.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .opa_process import find_opa


def lint_policies(policy_dir: Path, *, fmt_check: bool = True) -> tuple[bool, str]:
    """Strict compile check (and formatting check); returns (ok, report)."""
    opa = find_opa()
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
    opa = find_opa()
    run = subprocess.run([opa, "test", str(policy_dir), "--coverage", "--format", "json"], capture_output=True, text=True)
    try:
        coverage = float(json.loads(run.stdout)["coverage"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        coverage = 0.0
    verbose = subprocess.run([opa, "test", str(policy_dir)], capture_output=True, text=True)
    ok = run.returncode == 0 and verbose.returncode == 0 and coverage >= min_coverage
    return ok, coverage, (verbose.stdout + verbose.stderr).strip()
