"""The hardened notebook image: its one name, and how to make sure the engine has it.

No registry is reachable, so the image is built from Debian packages by
``images/notebook/build.sh`` into a root-filesystem tarball, cached by a key that hashes
the recipe (every file under ``images/notebook/``), and imported into the project's podman
storage. A second run re-imports only if the image is missing; a recipe change gives a new
key, so a new tarball and a fresh import. ``NOTEBOOK_IMAGE`` is a fixed version tag, never
``:latest`` (the image policy refuses it); bump it when the recipe changes in a way
spawned servers must notice.

Command line (what ``scripts/setup.d/20-notebook-image.sh`` runs)::

    python -m jovial_guard.runtime.image            # build the tarball if the cache lacks it
    python -m jovial_guard.runtime.image --key      # print the recipe key

Importing into an engine happens when a stack starts (each engine storage imports once).
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..paths import cache_dir
from .podman import EngineUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The recipe, relative to the checkout: its own directory and the steps it shares with
#: the other image recipes (images/lib), so both are part of its key.
RECIPE_PARTS = ("images/notebook", "images/lib")
RECIPE_DIR = REPO_ROOT / RECIPE_PARTS[0]
NOTEBOOK_REPOSITORY = "localhost/jovial-guard/notebook"
#: The image every notebook server runs. One place; bump the tag with the recipe.
NOTEBOOK_IMAGE = f"{NOTEBOOK_REPOSITORY}:v1"
NOTEBOOK_UID = 1000
NOTEBOOK_HOME = "/home/jovyan"
VENV = "/opt/notebook"
RECIPE_LABEL = "org.jovial-guard.recipe"

Progress = Callable[[str], None]


class ImageBuildFailed(EngineUnavailable):
    """The notebook image could not be built or imported; nothing can be spawned."""


class _HasPodmanArgs(Protocol):
    def podman_args(self) -> list[str]: ...

    def write_config(self) -> None: ...


def recipe_key(checkout: Path = REPO_ROOT) -> str:
    """Hash of every recipe file but the README (path + bytes): the tarball's cache key."""
    digest = hashlib.sha256()
    for part in RECIPE_PARTS:
        for path in sorted(p for p in (checkout / part).rglob("*") if p.is_file() and p.name != "README.md"):
            digest.update(path.relative_to(checkout).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def tarball_path(key: str) -> Path:
    return cache_dir() / "images" / f"{key}.tar"


def import_changes() -> list[str]:
    """``podman import --change`` lines: user, environment, entry command."""
    return [
        f"USER={NOTEBOOK_UID}",
        f"ENV=PATH={VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        f"ENV=HOME={NOTEBOOK_HOME}",
        "ENV=LANG=C.UTF-8",
        f"WORKDIR={NOTEBOOK_HOME}",
        'CMD=["jupyterhub-singleuser"]',
    ]


def _run(argv: list[str], *, what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageBuildFailed(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc


def image_recipe(service: _HasPodmanArgs, image: str = NOTEBOOK_IMAGE) -> str | None:
    """The recipe key label of ``image`` in the engine's storage, or None if absent."""
    proc = subprocess.run(
        service.podman_args() + ["image", "inspect", "--format",
                                 "{{index .Labels \"" + RECIPE_LABEL + "\"}}", image],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or ""


def build_tarball(key: str, *, progress: Progress) -> Path:
    """Run the recipe into ``$JOVIAL_GUARD_CACHE/images/KEY.tar`` unless already there."""
    out = tarball_path(key)
    if out.is_file():
        progress(f"notebook image: cached root filesystem {out}")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    progress(f"notebook image: first run, building recipe {key} (debootstrap + pip): about 2-4 min on 2 cores")
    partial = out.with_suffix(".tar.partial")
    proc = subprocess.Popen(
        ["bash", str(RECIPE_DIR / "build.sh"), str(partial)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    tail: list[str] = []
    stream = proc.stdout
    if stream is not None:
        for line in stream:
            line = line.rstrip()
            tail = (tail + [line])[-30:]
            if line.startswith("==> "):
                progress("notebook image: " + line[4:])
    if proc.wait() != 0:
        partial.unlink(missing_ok=True)
        raise ImageBuildFailed("building the notebook image failed:\n" + "\n".join(tail))
    partial.rename(out)
    return out


def ensure_notebook_image(service: _HasPodmanArgs, *, progress: Progress = print,
                          image: str = NOTEBOOK_IMAGE) -> str:
    """Make sure the engine has the current notebook image; return its name.

    Idempotent and cheap when nothing changed (one ``podman image inspect``). Builds the
    tarball if the cache lacks it, imports it if the engine lacks the image or holds one
    from another recipe. Serialized by a lock file so parallel callers build once.
    """
    key = recipe_key()
    # The CLI below reads the engine's containers.conf: it must exist before the first
    # podman call, whether or not the service was ever started on this storage.
    service.write_config()
    lock_path = cache_dir() / "images" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_recipe(service, image) == key:
            progress(f"notebook image: {image} present (recipe {key})")
            return image
        tar = build_tarball(key, progress=progress)
        progress(f"notebook image: importing {tar.name} as {image} into this engine storage (about 20-40 s)")
        argv = service.podman_args() + ["import", "--quiet"]
        for change in import_changes() + [f"LABEL={RECIPE_LABEL}={key}"]:
            argv += ["--change", change]
        argv += [str(tar), f"{NOTEBOOK_REPOSITORY}:{key}"]
        _run(argv, what="podman import")
        _run(service.podman_args() + ["tag", f"{NOTEBOOK_REPOSITORY}:{key}", image],
             what="podman tag")
        if image_recipe(service, image) != key:
            raise ImageBuildFailed(f"{image} is not recipe {key} after import")
        progress(f"notebook image: {image} ready")
        return image


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--key" in args:
        print(recipe_key())
        return 0
    try:
        build_tarball(recipe_key(), progress=lambda m: print(m, flush=True))
    except EngineUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
