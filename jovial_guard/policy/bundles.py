"""Signed OPA policy bundles: build with ``opa build``, verify before anything loads them.

Why bundles: OPA activates a bundle atomically (all modules and data swap in one
transaction), so a deploy can never leave OPA with half a policy, and the same signed
artifact serves the embedded OPA and every webhook replica's sidecar. Bundles are signed
with ES256 and *always* carry a key id (OPA releases before 1.21.3 could be tricked by
bundles without one: GHSA-g2pf-6v5v-qcc8; we pin 1.22.3 and still insist on the id).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import keyfile
from ..atomic import atomic_write
from ..errors import Misconfigured
from .opa_process import find_opa, policy_revision
from .wasm_bundle import embed_wasm

BUNDLE_NAME = "jovial_guard"
SIGNING_ALG = "ES256"


class BundleError(Misconfigured):
    """A bundle could not be built, or failed verification (unsigned, tampered, wrong key)."""


@dataclass(frozen=True)
class SigningKey:
    """An ES256 key pair on disk plus its key id."""

    private_path: Path
    public_path: Path
    key_id: str

    @property
    def public_pem(self) -> str:
        return self.public_path.read_text()

    @classmethod
    def load_or_create(cls, key_dir: Path, *, key_id: str = "jovial-guard-policy-1") -> SigningKey:
        """Load the key pair from ``key_dir``, creating it (0600, atomically) the first time.

        The key file gets the same checks as every key (:mod:`jovial_guard.keyfile`): a file
        others may read, or another uid owns, is refused with the ``chmod 600`` that fixes it.
        """
        private_path, id_path = key_dir / "signing.key", key_dir / "keyid"
        keyfile.load_or_create(private_path, "p256")
        if not id_path.exists():
            atomic_write(id_path, key_id.encode(), mode=0o644)
        return cls(private_path=private_path, public_path=keyfile.public_path(private_path),
                   key_id=id_path.read_text().strip())


@dataclass(frozen=True)
class PublicKey:
    """The verifying half only: what a bundle's consumer (a sidecar, a webhook worker) has."""

    public_path: Path
    key_id: str


def _run_opa(args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_opa(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def bundle_roots(staging: Path) -> list[str]:
    """The top-level data paths the bundle in ``staging`` fills, as its manifest's roots.

    A bundle without roots owns all of ``data``: activating it would erase every policy
    loaded beside it, such as a sidecar's ``system.authz`` (OPA then answers every request
    with "authorization policy missing"). OPA itself lists the namespaces
    (``opa inspect``); a data file at the bundle's top contributes its keys.
    """
    proc = _run_opa(["inspect", "--format", "json", "."], cwd=staging)
    if proc.returncode != 0:
        raise BundleError(f"opa inspect failed: {(proc.stderr or proc.stdout).strip()}")
    roots: set[str] = set()
    for namespace, files in json.loads(proc.stdout).get("namespaces", {}).items():
        parts = namespace.split(".")
        if len(parts) > 1:
            roots.add(parts[1])
            continue
        for name in files:
            path = (staging / name).resolve()
            if path.suffix == ".json" and path.is_file():
                document = json.loads(path.read_text())
                if not isinstance(document, dict):
                    raise BundleError(f"{name}: top-level data must be a JSON object")
                roots.update(document)
            elif path.suffix != ".rego":
                raise BundleError(f"{name}: top-level data must be JSON (data.json)")
    return sorted(roots)


def build_bundle(policy_dir: Path, output: Path, *, key: SigningKey, revision: str | None = None) -> str:
    """Build a signed bundle of ``policy_dir`` at ``output``; return its revision.

    The revision is the content digest of the policy directory (the same value the
    managed OPA reports in directory mode) and is also written into the bundle as
    ``data.jovial_guard_meta.revision`` so every decision names it. The manifest names
    the bundle's roots (:func:`bundle_roots`), so policies loaded beside it survive. The
    Rego compiled to Wasm is added as ``data.jovial_guard_wasm`` (:mod:`.wasm_bundle`), for
    webhook workers that evaluate the policy in process.
    """
    revision = revision or policy_revision(policy_dir)
    with tempfile.TemporaryDirectory(prefix="jovial-guard-bundle-") as tmp:
        staging = Path(tmp) / "bundle"
        shutil.copytree(policy_dir, staging, ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz", ".*"))
        meta = staging / "jovial_guard_meta"
        meta.mkdir(exist_ok=True)
        (meta / "data.json").write_text(json.dumps({"revision": revision}))
        # The compiled policy rides in the bundle as data, so the signature covers it.
        embed_wasm(staging)
        (staging / ".manifest").write_text(json.dumps({"roots": bundle_roots(staging)}))
        claims = Path(tmp) / "claims.json"
        claims.write_text(json.dumps({"keyid": key.key_id}))
        output.parent.mkdir(parents=True, exist_ok=True)
        # Built from inside the staging directory so module paths in the bundle are
        # "/pod_security/pod_security.rego", not this machine's temporary path.
        proc = _run_opa([
            "build", "--bundle", ".", "--output", str(output.resolve()), "--revision", revision,
            "--signing-key", str(key.private_path.resolve()), "--signing-alg", SIGNING_ALG, "--claims-file", str(claims),
        ], cwd=staging)
    if proc.returncode != 0:
        raise BundleError(f"opa build failed: {(proc.stderr or proc.stdout).strip()}")
    return revision


def verify_bundle(bundle: Path, *, key: SigningKey | PublicKey) -> None:
    """Raise BundleError unless ``bundle`` is signed by ``key`` (with its key id) and intact."""
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist")
    with tempfile.TemporaryDirectory(prefix="jovial-guard-verify-") as tmp:
        proc = _run_opa([
            "build", "--bundle", str(bundle), "--output", str(Path(tmp) / "verified.tar.gz"),
            "--verification-key", str(key.public_path), "--verification-key-id", key.key_id,
            "--signing-alg", SIGNING_ALG,
        ])
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().removeprefix("error: ")
        raise BundleError(f"bundle {bundle.name} failed verification, refusing to load it: {detail}")


def opa_bundle_config(*, service_url: str, key: SigningKey, poll_seconds: int = 1, long_poll_seconds: int = 10,
                      report_status: bool = False) -> dict[str, object]:
    """OPA configuration that downloads, verifies and activates our signed bundle.

    Long polling lets a deploy take effect as soon as the bundle server has it; the
    short polling bounds are the fallback. With ``report_status`` OPA's status plugin
    tells the bundle service which revision it activated (or why it refused one), so a
    deploy can wait for every replica without reaching their loopback-only OPAs.
    """
    config: dict[str, object] = {
        "services": {"policy_store": {"url": service_url}},
        "bundles": {
            BUNDLE_NAME: {
                "service": "policy_store",
                "resource": f"bundles/{BUNDLE_NAME}.tar.gz",
                "persist": False,
                "polling": {
                    "min_delay_seconds": poll_seconds,
                    "max_delay_seconds": poll_seconds + 1,
                    "long_polling_timeout_seconds": long_poll_seconds,
                },
                "signing": {"keyid": key.key_id},
            }
        },
        "keys": {key.key_id: {"algorithm": SIGNING_ALG, "key": key.public_pem}},
    }
    if report_status:
        config["status"] = {"service": "policy_store"}
    return config
