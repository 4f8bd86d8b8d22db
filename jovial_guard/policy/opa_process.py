"""A managed ``opa run --server`` subprocess on a free loopback port.

Why a managed process: the embedded single-machine mode, ``jovial-guard check`` and the
tests all need a real OPA without asking the user to run one. The process loads
``policies/`` (Rego + data) plus a generated ``meta`` document carrying the policy
revision, listens on 127.0.0.1 only, and is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from ..errors import PolicyEngineUnavailable
from ..paths import cache_dir
from ..processes import stop_group

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY_DIR = REPO_ROOT / "policies"


def find_opa() -> str:
    """Locate the ``opa`` binary: $JOVIAL_GUARD_OPA, the checkout's .tools, the cache, PATH."""
    candidates = [
        os.environ.get("JOVIAL_GUARD_OPA", ""),
        str(REPO_ROOT / ".tools" / "bin" / "opa"),
    ]
    candidates += sorted((str(p) for p in (cache_dir() / "tools" / "opa").glob("*/opa")), reverse=True)
    candidates.append(shutil.which("opa") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PolicyEngineUnavailable(
        "no 'opa' binary found: run scripts/install-opa.sh (builds a pinned OPA through the "
        "Go module proxy) or set JOVIAL_GUARD_OPA"
    )


def policy_files(policy_dir: Path) -> list[Path]:
    """The files OPA loads from a policy directory (Rego and data), sorted."""
    return sorted(
        p
        for p in policy_dir.rglob("*")
        if p.is_file() and p.suffix in (".rego", ".json", ".yaml", ".yml")
    )


def policy_revision(policy_dir: Path) -> str:
    """Content digest of the policy set: the revision every decision reports.

    Derived from the files themselves (path + bytes), so two OPAs loading the same
    policies report the same revision and any edit yields a new one.
    """
    digest = hashlib.sha256()
    for path in policy_files(policy_dir):
        rel = path.relative_to(policy_dir).as_posix()
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedOpa:
    """Start, wait for and stop one OPA server process.

    Use as a context manager. ``url`` is ``http://127.0.0.1:PORT``. ``extra_args`` lets
    callers add e.g. authentication flags; ``data_paths`` adds data files.
    """

    def __init__(
        self,
        policy_dir: Path | str | None = DEFAULT_POLICY_DIR,
        *,
        config: dict[str, Any] | None = None,
        opa_binary: str | None = None,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        data_paths: Iterable[Path] = (),
        revision: str | None = None,
        ready_timeout: float = 20.0,
        log_path: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
        token: str | None = None,
    ) -> None:
        # Either a policy directory (loaded once) or an OPA config with a bundle service
        # (signed bundles, swapped atomically on deploy), or both.
        self.policy_dir = Path(policy_dir) if policy_dir is not None else None
        if self.policy_dir is not None and not self.policy_dir.is_dir():
            raise PolicyEngineUnavailable(f"policy directory {self.policy_dir} does not exist")
        if self.policy_dir is None and not config:
            raise PolicyEngineUnavailable("ManagedOpa needs a policy directory or a bundle config")
        self.config = config
        self.opa_binary = opa_binary or find_opa()
        self.port = port or free_loopback_port()
        self.extra_args = list(extra_args)
        self.data_paths = [Path(p) for p in data_paths]
        self.revision = revision or (policy_revision(self.policy_dir) if self.policy_dir else "from-bundle")
        self.ready_timeout = ready_timeout
        self.log_path = log_path
        self.tls_cert, self.tls_key, self.tls_ca = tls_cert, tls_key, tls_ca
        self.token = token
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stderr_path = Path(os.devnull)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self, meta_file: Path | None, config_file: Path | None = None) -> list[str]:
        return [
            self.opa_binary,
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "error",
            "--disable-telemetry",
            *self._tls_args(),
            *(["--config-file", str(config_file)] if config_file else []),
            # With bundles, OPA listens only once the signed bundle is activated: a
            # (re)started OPA never answers from an empty store.
            *(["--ready-timeout", str(int(self.ready_timeout))] if self._bundled() else []),
            *self.extra_args,
            *([str(self.policy_dir)] if self.policy_dir else []),
            *(str(p) for p in self.data_paths),
            *([str(meta_file)] if meta_file else []),
        ]

    def _bundled(self) -> bool:
        return bool(self.config and self.config.get("bundles"))

    def _tls_args(self) -> list[str]:
        if not self.tls_cert:
            return []
        if not self.tls_key:
            raise PolicyEngineUnavailable("tls_cert given without tls_key")
        return ["--tls-cert-file", str(self.tls_cert), "--tls-private-key-file", str(self.tls_key)]

    def start(self) -> ManagedOpa:
        self._tmp = tempfile.TemporaryDirectory(prefix="jovial-guard-opa-")
        meta_file: Path | None = None
        if self.policy_dir is not None:
            meta_file = Path(self._tmp.name) / "meta.json"
            meta_file.write_text(json.dumps({"jovial_guard_meta": {"revision": self.revision}}))
        config_file: Path | None = None
        if self.config:
            config_file = Path(self._tmp.name) / "config.json"
            config_file.write_text(json.dumps(self.config))
        # OPA logs to stderr; a file (not a pipe nobody reads) can never block it.
        self._stderr_path = self.log_path or Path(self._tmp.name) / "opa.log"
        with open(self._stderr_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(meta_file, config_file),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._stderr_path.read_text(errors="replace")
                self._cleanup()
                raise PolicyEngineUnavailable(f"opa exited while starting: {err.strip()[:2000]}")
            try:
                # With bundles, ready means the bundle was downloaded, verified, activated.
                health = "/health?bundles" if self._bundled() else "/health"
                resp = requests.get(
                    f"{self.url}{health}",
                    timeout=0.5,
                    verify=str(self.tls_ca) if self.tls_ca else True,
                    headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
                )
                if resp.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise PolicyEngineUnavailable(f"opa did not become ready within {self.ready_timeout}s")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        """Start again on the same port (clients keep their URL); ready when it returns."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash would: tests use this to prove fail-closed behaviour."""
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc:
            stop_group(self._proc, grace=5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ManagedOpa:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
