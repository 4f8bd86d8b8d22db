"""Images for the single-node test cluster, without a registry.

The notebook image's root filesystem tarball (the same one the embedded engine imports) is
turned into a docker-archive by podman in a throw-away storage (``podman import`` with the
image's user, environment and command, then ``podman save``), cached beside the tarball by
recipe key, and loaded into containerd's ``k8s.io`` namespace with ``ctr images import``.
The webhook's and the node agent's root filesystems (scripts/test.d/70-webhook-image.sh,
71-node-agent-image.sh) go the same way.
The pause image's archive comes ready-made from scripts/test.d/55-pause-image.sh.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

from jovial_guard.paths import cache_dir
from jovial_guard.policy.opa_process import REPO_ROOT
from jovial_guard.runtime.image import NOTEBOOK_REPOSITORY, import_changes, recipe_key, tarball_path

from .node_tools import KUBE_VERSION

PAUSE_IMAGE = f"localhost/jovial-guard/pause:{KUBE_VERSION}"
#: The webhook image's root filesystem (scripts/test.d/70-webhook-image.sh) and how it runs.
WEBHOOK_TARBALL = REPO_ROOT / ".tools" / "images" / "webhook.tar"
WEBHOOK_REPOSITORY = "localhost/jovial-guard/webhook"
WEBHOOK_UID = 65532
WEBHOOK_CHANGES = [f"USER={WEBHOOK_UID}", "ENV=PATH=/usr/local/bin:/usr/bin:/bin", "ENV=LANG=C.UTF-8",
                   "ENV=PYTHONDONTWRITEBYTECODE=1", "WORKDIR=/", 'ENTRYPOINT=["jovial-guard"]', 'CMD=["--help"]']
#: The node agent's image (scripts/test.d/71-node-agent-image.sh): root, like the DaemonSet runs it.
NODE_AGENT_TARBALL = REPO_ROOT / ".tools" / "images" / "node-agent.tar"
NODE_AGENT_REPOSITORY = "localhost/jovial-guard/node-agent"
NODE_AGENT_CHANGES = ["USER=0", "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      "ENV=LANG=C.UTF-8", "ENV=PYTHONDONTWRITEBYTECODE=1", "WORKDIR=/",
                      'ENTRYPOINT=["jovial-guard"]', 'CMD=["node-agent","--help"]']


class ImageUnavailable(RuntimeError):
    """An image the node needs is neither cached nor buildable; the message says which step."""


def _run(argv: list[str], *, what: str, timeout: float = 600) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise ImageUnavailable(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")


def pause_archive() -> Path:
    """The pause image's docker-archive built by the set-up step."""
    path = cache_dir() / "tools" / "pause" / KUBE_VERSION / "pause.tar"
    if not path.is_file():
        raise ImageUnavailable(f"{path} is missing: run scripts/test.d/55-pause-image.sh (./guard test does)")
    return path


def notebook_image() -> str:
    """The notebook image's name inside the cluster (tagged by recipe key)."""
    return f"{NOTEBOOK_REPOSITORY}:{recipe_key()}"


def notebook_archive() -> Path:
    """The notebook image as a docker-archive, built once per recipe key."""
    key = recipe_key()
    rootfs = tarball_path(key)
    if not rootfs.is_file():
        raise ImageUnavailable(f"{rootfs} is missing: run scripts/setup.d/20-notebook-image.sh (./guard test does)")
    return docker_archive(rootfs, rootfs.with_name(f"{key}.docker-archive.tar"), notebook_image(), import_changes())


def webhook_image() -> tuple[str, Path]:
    """The webhook image's name inside the cluster (tagged by its build key) and its
    docker-archive; a missing or stale build names the step that makes it."""
    return _built_image("70-webhook-image.sh", WEBHOOK_TARBALL, WEBHOOK_REPOSITORY, WEBHOOK_CHANGES)


def node_agent_image() -> tuple[str, Path]:
    """The node agent's image name inside the cluster (tagged by its build key) and its
    docker-archive, as :func:`webhook_image`."""
    return _built_image("71-node-agent-image.sh", NODE_AGENT_TARBALL, NODE_AGENT_REPOSITORY, NODE_AGENT_CHANGES)


def _built_image(step: str, tarball: Path, repository: str, changes: list[str]) -> tuple[str, Path]:
    script = REPO_ROOT / "scripts" / "test.d" / step
    if not tarball.exists():
        raise ImageUnavailable(f"the {tarball.stem} image is not built: run {script} (./guard test does)")
    key = subprocess.run(["bash", str(script), "--key"], capture_output=True, text=True, check=True).stdout.strip()
    rootfs = tarball.resolve()
    if rootfs.name != f"{tarball.stem}-{key}.tar":
        raise ImageUnavailable(f"{tarball} is stale (recipe or code changed): rerun {script}")
    image = f"{repository}:{key}"
    return image, docker_archive(rootfs, rootfs.with_name(f"{tarball.stem}-{key}.docker-archive.tar"), image, changes)


def docker_archive(rootfs: Path, out: Path, image: str, changes: list[str]) -> Path:
    """``out``: the root filesystem tarball as a docker-archive named ``image``, made once."""
    if out.is_file():
        return out
    podman = shutil.which("podman")
    if podman is None:
        raise ImageUnavailable("podman is missing: run scripts/install-system.sh")
    with open(out.with_name(".docker-archive.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        # podman refuses a runroot longer than 50 characters: that one lives in /tmp.
        with tempfile.TemporaryDirectory(prefix="jovial-guard-archive-", dir=out.parent) as work, \
                tempfile.TemporaryDirectory(prefix="jg-run-") as run:
            base = [podman, "--root", f"{work}/root", "--runroot", run,
                    "--storage-driver", "vfs", "--tmpdir", work]
            argv = base + ["import", "--quiet"]
            for change in changes:
                argv += ["--change", change]
            try:
                _run(argv + [str(rootfs), image], what=f"podman import of {rootfs.name}")
                partial = out.with_suffix(".partial")
                _run(base + ["save", "--quiet", "--format", "docker-archive", "-o", str(partial), image],
                     what=f"podman save of {image}")
                partial.rename(out)
            finally:
                subprocess.run(base + ["rmi", "-a", "-f"], capture_output=True, check=False)
    return out


def import_into(ctr: str, address: str, archive: Path) -> None:
    """Load a docker-archive into containerd's CRI namespace, unpacked for overlayfs."""
    _run([ctr, "--address", address, "-n", "k8s.io", "images", "import",
          "--snapshotter", "overlayfs", str(archive)],
         what=f"ctr images import {archive.name}")
