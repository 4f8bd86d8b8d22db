"""`jovial-guard creds`: every sub-command, and readable one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jovial_guard.cli import main


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    base = ["creds", "--state-dir", str(tmp_path / "state"), "--key-dir", str(tmp_path / "keys")]

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, [*base, *args], prog_name="jovial-guard")
        return result.exit_code, result.output

    return invoke


def _issue(run, user: str = "alice") -> tuple[str, str]:  # type: ignore[no-untyped-def]
    code, out = run(
        "issue", "--user", user, "--uid", "1000", "--gid", "100", "--fileset", f"home/{user}", "--mode", "rw"
    )
    assert code == 0, out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    return fields["serial"].strip(), fields["token"].strip()


def test_lifecycle(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run("list")
    assert code == 2 and "creds init" in out  # a mistake, not a "no"
    assert run("init")[0] == 0
    serial, token = _issue(run)
    code, out = run("verify", token, "--user", "alice", "--fileset", "home/alice")
    assert code == 0 and out.startswith(f"valid: {serial}")
    code, out = run("verify", token, "--user", "bob")
    assert code == 1 and "GrantWrongUser" in out and "issued to 'alice', not 'bob'" in out
    code, out = run("verify", token, "--user", "alice", "--fileset", "home/bob")
    assert code == 1 and "GrantWrongFileset" in out
    code, out = run("verify", token[:-4] + "AAAA", "--user", "alice")
    assert code == 1 and out.strip() == "jovial-guard creds: InvalidGrant: invalid grant"
    code, out = run("rotate-key")
    assert code == 0 and "k2" in out
    code, out = run("list")
    assert code == 0 and serial in out and " k1 " in out and "live" in out
    code, out = run("rewrap", "--retire-old")
    assert code == 0 and "rewrapped 1" in out and "retired key k1" in out
    code, out = run("revoke", "--serial", serial, "--reason", "admin request")
    assert code == 0 and serial in out
    code, out = run("verify", serial, "--user", "alice")
    assert code == 1 and "GrantRevoked" in out and "admin request" in out
    code, out = run("list")
    assert "revoked: admin request" in out


def test_revoke_needs_one_target(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    code, out = run("revoke", "--reason", "x")
    assert code == 2 and "exactly one of --user or --serial" in out


def test_bad_issue_argument_is_named(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    code, out = run("issue", "--user", "alice", "--uid", "0", "--gid", "100", "--fileset", "home/alice", "--mode", "rw")
    assert code == 2 and "uid 0" in out and "never root" in out


def test_loose_key_file_refused(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    (tmp_path / "keys" / "kek.json").chmod(0o644)
    code, out = run("list")
    assert code == 2 and f"chmod 600 {tmp_path / 'keys' / 'kek.json'}" in out


def test_plan_writes_private_key_files(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    serial, _ = _issue(run)
    out_dir = tmp_path / "plan"
    code, out = run(
        "plan",
        serial,
        "--fsname",
        "astro",
        "--mgs-nid",
        "10.0.0.1@tcp",
        "--client-nid",
        "10.0.1.5@tcp",
        "--out",
        str(out_dir),
    )
    assert code == 0 and "lctl nodemap_set_fileset --name jg-alice --fileset /home/alice" in out
    assert (out_dir / "jg-alice.data").stat().st_mode & 0o777 == 0o600
    code, out = run("plan", serial, "--fsname", "BAD!", "--mgs-nid", "10.0.0.1@tcp", "--client-nid", "10.0.1.5@tcp")
    assert code == 2 and "fsname" in out
