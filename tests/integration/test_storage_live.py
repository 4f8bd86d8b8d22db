"""Storage grants in the running embedded stack (real hub, podman, mounts, OPA).

A spawned user sees exactly their own fileset at the documented path (/lustre/home, or the
group's project read-only at /lustre/project), nothing of another user's fileset, and no
key material anywhere in their environment or file system; revoking the grant (from
another process, like the CLI or an audit responder) removes access from the running
container.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from jovial_guard import paths
from jovial_guard.credentials import revoke
from jovial_guard.credentials.issuer import Issuer

pytestmark = pytest.mark.integration

#: Runs in the container as the notebook user: walks every file the user can read and
#: reports which hex-encoded needles occur in any of them (raw bytes, so binary secrets count).
SCAN = r"""
import os, sys, json
needles = [bytes.fromhex(h) for h in json.loads(sys.argv[1])]
hits = {}
skip = ("/proc", "/sys", "/dev")
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(skip):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > 64 << 20:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        for i, needle in enumerate(needles):
            if needle in data:
                hits.setdefault(i, []).append(path)
env = "\0".join(f"{k}={v}" for k, v in os.environ.items()).encode()
try:
    env += open("/proc/1/environ", "rb").read()
except OSError:
    pass
for i, needle in enumerate(needles):
    if needle in env:
        hits.setdefault(i, []).append("<environment>")
print(json.dumps(hits))
"""


def _storage_root() -> Path:
    explicit = os.environ.get("JOVIAL_GUARD_STORAGE_ROOT")
    if explicit:
        return Path(explicit)
    return paths.storage_root()


def _issuer(hub: Any) -> Issuer:
    return Issuer.from_directory(
        hub.state_dir / "credentials", keyring_path=hub.state_dir / "credentials-keys" / "kek.json"
    )


def _plant(fileset: str, name: str, content: str) -> Path:
    directory = _storage_root() / fileset
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, 1000, 100)
    directory.chmod(0o700)
    path = directory / name
    path.write_text(content)
    os.chown(path, 1000, 100)
    return path


def _spawn(hub: Any, username: str, groups: tuple[str, ...]) -> None:
    try:
        hub.spawn(username, groups=groups)
    except Exception as exc:  # noqa: BLE001 - re-raised with the hub's log for diagnosis
        raise AssertionError(f"spawn of {username} failed: {exc}\n{hub.hub_log(60)}") from exc


def _wait(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_own_fileset_only_no_keys_and_revocation_cuts_access(embedded_hub: Any) -> None:
    hub = embedded_hub
    tag = secrets.token_hex(8)
    mine = f"storage-alice-{tag}"
    theirs = f"storage-carol-{tag}"
    _plant("home/stusera", "mine.txt", mine)
    _plant("home/stuserc", "theirs.txt", theirs)

    _spawn(hub, "stusera", ())
    rc, out = hub.exec("stusera", ["cat", "/lustre/home/mine.txt"])
    assert (rc, out.strip()) == (0, mine), out
    rc, out = hub.exec("stusera", ["sh", "-c", f"echo written-{tag} > /lustre/home/from-container.txt && id -u"])
    assert rc == 0, out
    written = _storage_root() / "home" / "stusera" / "from-container.txt"
    assert written.read_text().strip() == f"written-{tag}"
    assert written.stat().st_uid == 1000  # the user's uid, as granted
    # the staging parent is read-only: nothing can be planted beside the fileset
    rc, out = hub.exec("stusera", ["sh", "-c", "touch /lustre/planted"])
    assert rc != 0 and "Read-only file system" in out

    issuer = _issuer(hub)
    serials = issuer.live_serials(user="stusera")
    assert len(serials) == 1
    grant = issuer.load(serials[0])
    keyring = json.loads((hub.state_dir / "credentials-keys" / "kek.json").read_text())
    keks = [base64.b64decode(k["key"]) for k in keyring["keys"].values()]
    token_tail = issuer.store.get(grant.serial)[-24:]  # ciphertext + tag of the stored envelope
    pem_keys = [p.read_bytes() for p in (hub.state_dir / "credentials-keys").glob("*.key")]
    pem_keys += [p.read_bytes() for p in (hub.state_dir / "credentials-agent").glob("*.key")]
    needles: dict[str, bytes] = {
        "grant secret": grant.secret,
        "grant secret (base64)": base64.b64encode(grant.secret),
        "grant secret (hex)": grant.secret.hex().encode(),
        "grant plaintext JSON": grant.to_json_bytes(),
        "envelope ciphertext": token_tail,
        "other user's file": theirs.encode(),
        "grant serial": grant.serial.encode(),
    }
    for i, kek in enumerate(keks):
        needles[f"KEK {i}"] = kek
        needles[f"KEK {i} (base64)"] = base64.b64encode(kek)
    for i, pem in enumerate(pem_keys):
        needles[f"private key file {i}"] = pem.splitlines()[1]  # first base64 line of the PEM body
    names = list(needles)
    rc, out = hub.exec("stusera", ["python3", "-c", SCAN, json.dumps([needles[n].hex() for n in names])], timeout=300)
    assert rc == 0, out
    hits = {names[int(i)]: paths for i, paths in json.loads(out.strip().splitlines()[-1]).items()}
    assert hits == {}, f"found in the container: {hits}"
    env = "\n".join(hub.container("stusera").attrs["Config"]["Env"] or []).encode()
    assert [n for n in names if needles[n] in env] == []
    # the hub's credential state holds envelopes only: no secret or grant JSON in clear
    for path in (hub.state_dir / "credentials").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name in ("grant secret", "grant secret (base64)", "grant secret (hex)", "grant plaintext JSON"):
                assert needles[name] not in data, f"{name} in {path}"
            assert all(kek not in data for kek in keks), f"KEK in {path}"
    # and the container has no mount of another fileset
    rc, out = hub.exec("stusera", ["cat", "/proc/self/mountinfo"])
    lustre_mounts = [line.split()[3:5] for line in out.splitlines() if " /lustre" in line]
    assert sorted(m[1] for m in lustre_mounts) == ["/lustre", "/lustre/home"], out
    assert all("stuserc" not in m[0] for m in lustre_mounts)

    # revoke from another process (the hub's agent sees it on its next sweep)
    assert revoke(
        user="stusera",
        reason="live test",
        state_dir=hub.state_dir / "credentials",
        key_dir=hub.state_dir / "credentials-keys",
    ) == [grant.serial]

    def gone() -> bool:
        code, listing = hub.exec("stusera", ["ls", "-A", "/lustre/home"])
        return code == 0 and listing.strip() == ""

    _wait(gone, timeout=45, what="the revoked fileset to disappear from the running container")
    rc, out = hub.exec("stusera", ["cat", "/lustre/home/mine.txt"])
    assert rc != 0
    assert hub.container("stusera").status == "running"
    assert (_storage_root() / "home" / "stusera" / "mine.txt").read_text() == mine  # data intact
    hub.stop("stusera")


def test_group_project_is_read_only_and_stop_revokes(embedded_hub: Any) -> None:
    hub = embedded_hub
    tag = secrets.token_hex(8)
    _plant("projects/astro", f"catalog-{tag}.csv", "ra,dec\n")
    _spawn(hub, "stuserg", ("astro",))
    rc, out = hub.exec("stuserg", ["cat", f"/lustre/project/catalog-{tag}.csv"])
    assert (rc, out) == (0, "ra,dec\n"), out
    rc, out = hub.exec("stuserg", ["sh", "-c", "echo x > /lustre/project/new.csv"])
    assert rc != 0 and "Read-only file system" in out
    rc, out = hub.exec("stuserg", ["ls", "/lustre"])
    assert out.split() == ["project"]
    issuer = _issuer(hub)
    (serial,) = issuer.live_serials(user="stuserg")
    hub.stop("stuserg")
    revoked = issuer.revocations.get(serial)
    assert revoked is not None and revoked.reason == "server stopped"
