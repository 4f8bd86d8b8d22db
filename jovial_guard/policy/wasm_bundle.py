"""The compiled policy inside the signed bundle: build it in, and take it out only verified.

``opa build -t wasm`` compiles the bundle's Rego (the decision and batch entry points) to
``policy.wasm``. The module goes into the bundle as the data document
``data.jovial_guard_wasm`` (base64), so the bundle's signature covers it like every other
file, the OPA server can still load the very same bundle (a data document is inert to it),
and the module can never come from anywhere but a bundle that passed verification:
:func:`load_verified` verifies the bytes it was given (OPA's own verification, the same
key and key id the sidecar's configuration names) and parses those same bytes, never the
file again.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Misconfigured
from .opa_process import find_opa

#: Where the module lives in the bundle's data (a root of the bundle's manifest).
WASM_ROOT = "jovial_guard_wasm"
#: The entry points compiled into the module.
ENTRYPOINTS = ("jovial_guard/main/decision", "jovial_guard/batch/decisions")
#: The largest bundle read (a compiled policy is ~0.5 MB; its data a few KB).
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_MEMBERS = 10_000


class WasmBundleError(Misconfigured):
    """The compiled policy could not be built, or the bundle carrying it is unusable."""


@dataclass(frozen=True)
class PolicyArtifact:
    """A compiled policy with the data it evaluates against and the revision it is."""

    wasm: bytes
    data_json: bytes
    revision: str


def _copy_without_tests(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*_test.rego", "__pycache__", "*.tar.gz", ".*"))


def compile_wasm(policy_dir: Path) -> tuple[bytes, bytes]:
    """(policy.wasm, the directory's merged data.json) from ``opa build -t wasm``.

    Rego tests are left out: they are not part of any decision, and the test helpers
    they import need built-ins a Wasm host does not offer.
    """
    with tempfile.TemporaryDirectory(prefix="jovial-guard-wasm-") as tmp:
        staging = Path(tmp) / "policies"
        _copy_without_tests(policy_dir, staging)
        shutil.rmtree(staging / WASM_ROOT, ignore_errors=True)
        output = Path(tmp) / "wasm.tar.gz"
        args = [find_opa(), "build", "-t", "wasm", "--output", str(output)]
        for entrypoint in ENTRYPOINTS:
            args += ["-e", entrypoint]
        proc = subprocess.run([*args, "."], capture_output=True, text=True, timeout=300, cwd=staging)
        if proc.returncode != 0:
            raise WasmBundleError(f"opa build -t wasm failed: {(proc.stderr or proc.stdout).strip()[:2000]}")
        files = _read_tar(output.read_bytes())
    if "policy.wasm" not in files:
        raise WasmBundleError("opa build -t wasm produced no policy.wasm")
    return files["policy.wasm"], files.get("data.json", b"{}")


def embed_wasm(staging: Path) -> None:
    """Compile the Rego in a bundle's staging directory and add the module as data."""
    wasm, _data = compile_wasm(staging)
    target = staging / WASM_ROOT
    target.mkdir(exist_ok=True)
    document = {"module": base64.b64encode(wasm).decode(), "entrypoints": list(ENTRYPOINTS)}
    (target / "data.json").write_text(json.dumps(document))


def compile_directory(policy_dir: Path, revision: str) -> PolicyArtifact:
    """A compiled policy straight from a policy directory (``jovial-guard check``, which
    would otherwise start an OPA on the same directory); ``revision`` goes into its data
    as ``jovial_guard_meta.revision``, as a managed OPA's revision file does."""
    wasm, data_json = compile_wasm(policy_dir)
    data = json.loads(data_json)
    if not isinstance(data, dict):
        raise WasmBundleError("the policy directory's data is not a JSON object")
    data.pop(WASM_ROOT, None)
    data.setdefault("jovial_guard_meta", {})["revision"] = revision
    return PolicyArtifact(wasm=wasm, data_json=json.dumps(data).encode(), revision=revision)


def _read_tar(blob: bytes) -> dict[str, bytes]:
    """Regular files of a bundle tarball by path without the leading '/'."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise WasmBundleError("the bundle has too many files")
                if not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                files[member.name.lstrip("/").removeprefix("./")] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WasmBundleError(f"the bundle is not a readable tarball: {exc}") from exc
    return files


def bundle_data(files: dict[str, bytes]) -> dict[str, Any]:
    """The bundle's data document: every ``data.json``, placed at its directory's path."""
    data: dict[str, Any] = {}
    for name in sorted(files):
        if name != "data.json" and not name.endswith("/data.json"):
            continue
        try:
            document = json.loads(files[name])
        except ValueError as exc:
            raise WasmBundleError(f"{name} in the bundle is not JSON: {exc}") from exc
        parts = [p for p in name.split("/")[:-1] if p]
        node = data
        for part in parts:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise WasmBundleError(f"{name} in the bundle conflicts with other data")
            node = child
        if not isinstance(document, dict):
            if not parts:
                raise WasmBundleError("the bundle's top-level data.json is not an object")
            parent = data
            for part in parts[:-1]:
                parent = parent[part]
            parent[parts[-1]] = document
            continue
        for key, value in document.items():
            if key in node:
                raise WasmBundleError(f"{name} in the bundle redefines {key}")
            node[key] = value
    return data


def artifact_from_bundle(blob: bytes) -> PolicyArtifact:
    """The compiled policy, data and revision of a bundle's bytes (verify them first)."""
    data = bundle_data(_read_tar(blob))
    carried = data.pop(WASM_ROOT, None)
    if not isinstance(carried, dict) or not isinstance(carried.get("module"), str):
        raise WasmBundleError(
            "the bundle carries no compiled policy (data.jovial_guard_wasm): publish it again with this "
            "version of jovial-guard, or serve decisions with the OPA sidecar (--engine opa)")
    try:
        wasm = base64.b64decode(carried["module"], validate=True)
    except ValueError as exc:
        raise WasmBundleError("the bundle's compiled policy is not valid base64") from exc
    meta = data.get("jovial_guard_meta")
    revision = meta.get("revision") if isinstance(meta, dict) else None
    if not isinstance(revision, str) or not revision:
        raise WasmBundleError("the bundle has no jovial_guard_meta.revision")
    return PolicyArtifact(wasm=wasm, data_json=json.dumps(data).encode(), revision=revision)


def load_verified(blob: bytes, *, public_key: Path, key_id: str) -> PolicyArtifact:
    """Verify ``blob`` as a bundle signed by ``public_key``/``key_id``, then read it.

    Raises :class:`~jovial_guard.policy.bundles.BundleError` when verification fails and
    :class:`WasmBundleError` when the verified bundle is unusable.
    """
    from .bundles import PublicKey, verify_bundle

    if len(blob) > MAX_BUNDLE_BYTES:
        raise WasmBundleError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="jovial-guard-bundle-") as tmp:
        copy = Path(tmp) / "bundle.tar.gz"
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        verify_bundle(copy, key=PublicKey(public_path=public_key, key_id=key_id))
    return artifact_from_bundle(blob)
