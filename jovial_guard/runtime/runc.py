"""The OCI runtime the project's engine runs notebooks with: runc, built at a pinned version.

Why not Debian's runc 1.1.5: a notebook container has a user namespace of its own and joins
a network namespace the project made (owned by the host's user namespace). runc 1.1 joins
the container's user namespace first and then cannot enter that network namespace, so every
``exec`` into the container fails ("error executing setns process: exit status 1"); runc
1.2.1 and later join in two stages (what nsenter does). The build goes through the Go module
proxy with cgo and the ``seccomp`` tag against Debian's libseccomp (installed by
``scripts/install-system.sh``), cached by version under ``$JOVIAL_GUARD_CACHE/tools/runc/``.

Command line (what ``scripts/setup.d/15-runc.sh`` runs)::

    python -m jovial_guard.runtime.runc          # build if the cache lacks it; print the path
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import Unavailable
from ..paths import cache_dir

VERSION = "v1.3.7"
MODULE = "github.com/opencontainers/runc"


class RuntimeMissing(Unavailable):
    """The project's runc is not built; the engine cannot run user-namespaced notebooks."""


def runc_dir(version: str = VERSION) -> Path:
    return cache_dir() / "tools" / "runc" / version


def runc_path(version: str = VERSION) -> Path:
    """The built runc; raises RuntimeMissing naming the set-up step when it is absent."""
    path = runc_dir(version) / "runc"
    if not os.access(path, os.X_OK):
        raise RuntimeMissing(
            f"runc {version} is not built ({path} is missing): run scripts/setup.d/15-runc.sh "
            "(about a minute; Go and libseccomp-dev from scripts/install-system.sh)"
        )
    return path


def build(version: str = VERSION) -> Path:
    """Build runc ``version`` into the cache unless it is there (locked against a second
    builder); returns its path. Raises RuntimeMissing with the build log's tail on failure."""
    dest = runc_dir(version)
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return runc_path(version)
        except RuntimeMissing:
            pass
        go = shutil.which("go")
        if go is None:
            raise RuntimeMissing("'go' is required to build runc: install Go (the Kubernetes tools use it too)")
        staging = dest / "bin.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        env = dict(os.environ, GOBIN=str(staging), CGO_ENABLED="1", GOFLAGS="-mod=mod -buildvcs=false")
        log = dest / "go-build.log"
        with open(log, "wb") as out:
            done = subprocess.run(
                ["nice", go, "install", "-trimpath", "-tags", "seccomp",
                 "-ldflags", f"-s -w -X main.version={version.lstrip('v')}", f"{MODULE}@{version}"],
                env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeMissing(f"building runc {version} failed (log {log}):\n{tail}")
        os.replace(staging / "runc", dest / "runc")
        shutil.rmtree(staging, ignore_errors=True)
        return runc_path(version)


def main() -> int:
    try:
        path = build()
    except RuntimeMissing as exc:
        print(f"runc: {exc}", file=sys.stderr)
        return 2
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    print(f"runc {VERSION}: {path} ({version.stdout.splitlines()[0] if version.stdout else '?'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
