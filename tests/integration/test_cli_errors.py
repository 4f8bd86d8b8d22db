"""Every CLI, given a foreseeable mistake, says so in one line and exits 2 (no traceback).

Each case runs ``jovial-guard`` as a user would (a subprocess) with one mistake: a missing
file, a wrong URL, OPA down, permission denied, a port in use, a malformed configuration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from jovial_guard import cli
from jovial_guard.admission.tls import CertPaths, write_webhook_certs
from jovial_guard.errors import JovialGuardError, PolicyEngineUnavailable
from jovial_guard.policy.opa_process import free_loopback_port
from tests.conftest import FIXTURES

POD = str(FIXTURES / "pss" / "allowed.yaml")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jovial_guard", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_webhook_certs(tmp_path_factory.mktemp("certs"), dns_names=["localhost"], ip_addresses=["127.0.0.1"])


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "rules.yaml").write_text("rules: [\n")
    (tmp_path / "data.json").write_text('{"settings": ')
    (tmp_path / "key.pem").write_text("not a key\n")
    return {"tmp": str(tmp_path), "rules": str(tmp_path / "rules.yaml"), "data": str(tmp_path / "data.json"),
            "badkey": str(tmp_path / "key.pem")}


Case = Callable[[dict[str, str], CertPaths, int], tuple[list[str], dict[str, str], str]]
DEAD = f"http://127.0.0.1:{free_loopback_port()}"

CASES: dict[str, Case] = {
    "check: missing CA file": lambda f, c, p: (["check", "--opa-ca", "/nonexistent/ca.pem", POD], {}, "--opa-ca"),
    "check: wrong OPA URL": lambda f, c, p: (["check", POD, "--opa-url", "localhost:8181"], {}, "must look like"),
    "check: OPA down": lambda f, c, p: (["check", POD, "--opa-url", DEAD, "--deadline", "1"], {}, "could not be decided"),
    "check: stdin twice": lambda f, c, p: (["check", "-", "-"], {}, "only once"),
    "policy: missing policy dir": lambda f, c, p: (["policy", "lint", "--policy-dir", "/nonexistent"], {}, "does not exist"),
    "policy: store path through a file": lambda f, c, p: (["policy", "history", "--store", "/dev/null/store"], {}, "Not a directory"),
    "policy: missing bundle": lambda f, c, p: (["policy", "bundle", "verify", "/nonexistent.tar.gz"], {}, "does not exist"),
    "creds: key dir through a file": lambda f, c, p: (["creds", "--key-dir", "/dev/null/keys", "init"], {}, "Not a directory"),
    "creds: permission denied": lambda f, c, p: (["creds", "--state-dir", "/sys/jovial-guard-test", "--key-dir", f["tmp"] + "/k", "init"],
                                                 {}, "not permitted"),
    "audit: malformed rules file": lambda f, c, p: (["audit", "serve", "--dir", f["tmp"] + "/log", "--listen", f"127.0.0.1:{free_loopback_port()}",
                                                     "--rules", f["rules"]], {}, "rules"),
    "audit: missing log dir": lambda f, c, p: (["audit", "verify", "--dir", "/nonexistent"], {}, "does not exist"),
    "webhook: wrong OPA URL": lambda f, c, p: (["webhook", "serve", "--opa-url", "localhost:8181", "--cert", str(c.cert), "--key", str(c.key)],
                                               {}, "must look like"),
    "webhook: key is not PEM": lambda f, c, p: (["webhook", "serve", "--opa-url", DEAD, "--cert", str(c.cert), "--key", f["badkey"]],
                                                {}, "TLS"),
    "webhook: port in use": lambda f, c, p: (["webhook", "serve", "--opa-url", DEAD, "--cert", str(c.cert), "--key", str(c.key),
                                              "--host", "127.0.0.1", "--port", str(p), "--engine-deadline", "0.5"], {}, "in use"),
    "webhook: malformed data file": lambda f, c, p: (["webhook", "netpol", "--data", f["data"]], {}, "JSON"),
    "up: tools missing": lambda f, c, p: (["up"], {"PATH": str(Path(sys.executable).parent)}, "missing"),
    "up: missing config": lambda f, c, p: (["up", "--config", "/nonexistent/jupyterhub_config.py"], {}, "does not exist"),
    "no such command": lambda f, c, p: (["nosuch"], {}, "No such command"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mistake_is_one_line_and_exit_2(name: str, files: dict[str, str], certs: CertPaths, busy_port: int) -> None:
    args, env, phrase = CASES[name](files, certs, busy_port)
    proc = run(*args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jovial-guard") and phrase in lines[0], lines[0]


class Refused(JovialGuardError):
    exit_code = 3


@click.command()
@click.argument("what")
def boom(what: str) -> None:
    """Raises what it is told to (for the error path's own tests)."""
    errors: dict[str, BaseException] = {
        "coded": Refused("refused on purpose"), "engine": PolicyEngineUnavailable("OPA at http://x is unreachable"),
        "oserror": PermissionError(13, "Permission denied", "/etc/secret"), "bug": KeyError("surprise"),
        "click-default": click.ClickException("a mistake the command named"),
    }
    if what == "click-coded":
        answer = click.ClickException("verification failed")
        answer.exit_code = 1
        raise answer
    if what == "click-from-coded":
        try:
            raise Refused("refused on purpose")
        except Refused as exc:
            raise click.ClickException(f"wrapped: {exc}") from None
    raise errors[what]


@pytest.mark.parametrize("what, code, text", [
    ("coded", 3, "jovial-guard boom: refused on purpose"),
    ("engine", 2, "jovial-guard boom: OPA at http://x is unreachable"),
    ("oserror", 2, "jovial-guard boom: Permission denied: /etc/secret (check its permissions"),
    ("click-default", 2, "jovial-guard boom: a mistake the command named"),
    ("click-coded", 1, "jovial-guard boom: verification failed"),
    ("click-from-coded", 3, "jovial-guard boom: wrapped: refused on purpose"),
])
def test_exit_code_comes_from_the_exception(monkeypatch: Any, what: str, code: int, text: str) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", f"{__name__}:boom")
    result = CliRunner().invoke(cli.main, ["boom", what], prog_name="jovial-guard")
    assert result.exit_code == code
    assert result.stderr.strip().startswith(text)


def test_policy_rollback_with_opa_down(tmp_path: Path) -> None:
    import shutil

    from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR
    from jovial_guard.policy.store import PolicyStore

    store = PolicyStore(tmp_path / "store")
    first = store.add(DEFAULT_POLICY_DIR)
    store.activate(first)
    store.record("deploy", first, previous=None, details={})
    changed = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, changed)
    (changed / "main.rego").write_text((changed / "main.rego").read_text() + "\n# changed\n")
    second = store.add(changed)
    store.activate(second)
    store.record("deploy", second, previous=first, details={})
    proc = run("policy", "rollback", "--store", str(tmp_path / "store"), "--opa-url", DEAD)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "rollback:" in proc.stderr


def test_a_bug_keeps_its_traceback(monkeypatch: Any) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", f"{__name__}:boom")
    result = CliRunner().invoke(cli.main, ["boom", "bug"], prog_name="jovial-guard")
    assert isinstance(result.exception, KeyError)
