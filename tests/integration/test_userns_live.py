"""Per-user user namespaces, seen from the host on real spawns through the Hub REST API.

Alice's and bob's containers run as container uid 1000, but each maps it to a host uid of
its own, owned by no account and inside the project's range only. A process that escapes
on purpose (``nsenter`` from the host into alice's mount namespace with alice's host ids)
is refused bob's home and dana's storage fileset, while the same probe with their own ids
reads them (so the probe can fail). Users keep working: a notebook cell writes home and
/tmp, dana writes her own fileset and alice reads her group's shared one (idmapped mounts);
a home volume from before user namespaces is owned through the mapping, and private, at the
next spawn; a home already owned through the mapping is not walked again.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.hardening.subids import LOGIN_DEFS, SUBUID, login_defs_ranges, parse_subid
from jovial_guard.hardening.userns import host_range
from jovial_guard.paths import storage_root

from . import userflow
from .conftest import HOME_VOLUME, EmbeddedHub, SpawnFailed

pytestmark = pytest.mark.integration

PROBE = """
import json, os
out = {"ids": [os.getuid(), os.getgid(), os.getgroups()]}
for name, fd in json.loads(os.environ["FDS"]).items():
    try:
        with open(os.open("secret.txt", os.O_RDONLY, dir_fd=fd)) as handle:
            out[name] = {"errno": 0, "data": handle.read()}
    except OSError as exc:
        out[name] = {"errno": exc.errno}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def users(embedded_hub: EmbeddedHub) -> dict[str, int]:
    """alice and bob running (as the red-team suite spawns them; their group astro shares a
    read-only project fileset), dana in no group (her own fileset): user -> container pid."""
    try:
        embedded_hub.spawn("alice", "default", groups=("astro", "large-memory"))
        embedded_hub.spawn("bob", "default", groups=("astro",))
        embedded_hub.spawn("dana", "default", groups=())
    except SpawnFailed as exc:
        raise AssertionError(f"{exc}\n{embedded_hub.hub_log(60)}") from exc
    return {u: int(embedded_hub.container(u).attrs["State"]["Pid"]) for u in ("alice", "bob", "dana")}


def _ids(pid: int) -> tuple[list[int], list[int]]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1:]
    return [int(x) for x in uid], [int(x) for x in gid]


def _map(pid: int, name: str) -> tuple[int, int, int]:
    first, host, size = (int(x) for x in Path(f"/proc/{pid}/{name}").read_text().split())
    return first, host, size


def _container_pids(pid: int) -> list[int]:
    """Every process in the container's pid namespace (seen from the host)."""
    target = os.readlink(f"/proc/{pid}/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == target:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _volume_dir(hub: EmbeddedHub, user: str) -> Path:
    return Path(hub.docker.volumes.get(HOME_VOLUME.format(username=user)).attrs["Mountpoint"])


def test_each_user_runs_under_host_ids_of_their_own(embedded_hub: EmbeddedHub, users: dict[str, int]) -> None:
    project = host_range()
    login = login_defs_ranges(LOGIN_DEFS.read_text())
    others = [r for name, r in parse_subid(SUBUID.read_text()) if name != "jovial-guard"]
    seen: dict[str, int] = {}
    for user, pid in users.items():
        first, host_start, size = _map(pid, "uid_map")
        assert (first, size) == (0, 65536) and _map(pid, "gid_map") == (0, host_start, 65536)
        for process in _container_pids(pid):
            uids, gids = _ids(process)
            assert set(uids) == {host_start + 1000} and set(gids) == {host_start + 100}, (user, process)
        host_uid = host_start + 1000
        seen[user] = host_uid
        assert project.start <= host_start and host_start + size <= project.end
        assert not (login["UID"].start <= host_uid < login["UID"].end)
        assert not any(r.start <= host_uid < r.end for r in others)
        with pytest.raises(KeyError):
            pwd.getpwuid(host_uid)
        rc, out = embedded_hub.exec(user, ["id", "-u"])
        assert (rc, out.strip()) == (0, "1000")
    assert len(set(seen.values())) == 3
    # Blocks never overlap: 65536 ids apart at least.
    ordered = sorted(seen.values())
    assert all(b - a >= 65536 for a, b in zip(ordered, ordered[1:], strict=False))


def test_a_cell_writes_home_and_tmp_through_the_mapping(embedded_hub: EmbeddedHub,
                                                         users: dict[str, int]) -> None:
    password = embedded_hub.stack.settings.password or ""
    session = userflow.login(embedded_hub.url, "alice", password)
    out = userflow.run_cell(embedded_hub.url, "alice", session, (
        "import os, pathlib\n"
        "for p in ('/home/jovyan/cell.txt', '/tmp/cell.txt'):\n"
        "    pathlib.Path(p).write_text('ok')\n"
        "print(os.getuid(), oct(os.stat('/home/jovyan').st_mode & 0o777),"
        " [os.stat(p).st_uid for p in ('/home/jovyan/cell.txt', '/tmp/cell.txt')])"
    ))
    assert out["status"] == "ok", out
    assert out["stdout"].strip().split(None, 2) == ["1000", "0o700", "[1000, 1000]"], out
    host_uid = _ids(users["alice"])[0][0]
    home_file = _volume_dir(embedded_hub, "alice") / "cell.txt"
    assert home_file.stat().st_uid == host_uid  # on disk: alice's host uid


def test_storage_is_seen_through_each_users_mapping(embedded_hub: EmbeddedHub, users: dict[str, int]) -> None:
    rc, out = embedded_hub.exec("dana", ["sh", "-c", "echo mine > /lustre/home/dana.txt && stat -c %u /lustre/home/dana.txt"])
    assert (rc, out.strip()) == (0, "1000"), out
    # On disk the fileset keeps the storage's ids; the mount is idmapped for dana's block.
    assert (storage_root() / "home" / "dana" / "dana.txt").stat().st_uid == 1000
    assert "idmapped" in _stage_mount_options("dana", "home")
    # alice and bob share astro's read-only project fileset: each sees it as their own uid.
    for user in ("alice", "bob"):
        rc, out = embedded_hub.exec(user, ["sh", "-c", "ls /lustre/project >/dev/null && stat -c %u /lustre/project"])
        assert (rc, out.strip()) == (0, "1000"), (user, out)


def _escape(pid: int, ids: tuple[int, int], fds: dict[str, int]) -> dict[str, Any]:
    """From the host: enter ``pid``'s mount namespace with ``ids`` and open each fd's secret."""
    uid, gid = ids
    proc = subprocess.run(
        ["nsenter", f"--target={pid}", "--mount", f"--setuid={uid}", f"--setgid={gid}", "--",
         "/usr/bin/python3", "-c", PROBE],
        env={"FDS": json.dumps(fds), "PATH": "/usr/bin:/bin"}, pass_fds=tuple(fds.values()),
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_an_escape_into_alices_mount_namespace_cannot_read_bobs_files(
        embedded_hub: EmbeddedHub, users: dict[str, int]) -> None:
    rc, out = embedded_hub.exec("bob", ["sh", "-c", "echo bob-home > /home/jovyan/secret.txt"])
    assert rc == 0, out
    rc, out = embedded_hub.exec("dana", ["sh", "-c", "echo dana-lustre > /lustre/home/secret.txt"])
    assert rc == 0, out
    # What an escaped process could hold: bob's home (the volume's data) and dana's fileset
    # as mounted for her container (the agent's staging mount, idmapped through her block).
    fds = {"home": os.open(_volume_dir(embedded_hub, "bob"), os.O_PATH | os.O_DIRECTORY),
           "storage": os.open(_stage("dana", "home"), os.O_PATH | os.O_DIRECTORY)}
    try:
        ids = {u: (_ids(pid)[0][0], _ids(pid)[1][0]) for u, pid in users.items()}
        escaped = _escape(users["alice"], ids["alice"], fds)
        assert escaped["ids"] == [ids["alice"][0], ids["alice"][1], []]
        assert escaped["home"] == {"errno": errno.EACCES}, escaped
        assert escaped["storage"] == {"errno": errno.EACCES}, escaped
        # The same probe with the owners' ids reads them: the refusal above is the mapping's.
        assert _escape(users["bob"], ids["bob"], fds)["home"] == {"errno": 0, "data": "bob-home\n"}
        assert _escape(users["dana"], ids["dana"], fds)["storage"] == {"errno": 0, "data": "dana-lustre\n"}
    finally:
        for fd in fds.values():
            os.close(fd)


def _stage_line(user: str, leaf: str) -> list[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = Path(fields[4])
        if point.name == leaf and point.parent.name == user and "staging" in point.parts:
            return fields
    raise AssertionError(f"no staging mount for {user}/{leaf}")


def _stage(user: str, leaf: str) -> Path:
    """The user's fileset mount as the host sees it (the agent's staging directory)."""
    return Path(_stage_line(user, leaf)[4])


def _stage_mount_options(user: str, leaf: str) -> str:
    return _stage_line(user, leaf)[5]


def test_a_home_from_before_user_namespaces_is_owned_through_the_mapping(embedded_hub: EmbeddedHub) -> None:
    name = HOME_VOLUME.format(username="oldhome")
    volume = embedded_hub.docker.volumes.create(name)
    data = Path(volume.attrs["Mountpoint"])
    (data / "old.ipynb").write_text("{}")
    (data / ".local").mkdir()
    for path in (data, data / "old.ipynb", data / ".local"):
        os.chown(path, 1000, 1000)  # what every home was: host uid 1000, mode 0755
    data.chmod(0o755)
    embedded_hub.spawn("oldhome", "default", groups=("astro",))
    try:
        pid = int(embedded_hub.container("oldhome").attrs["State"]["Pid"])
        host_uid = _ids(pid)[0][0]
        assert host_uid != 1000
        assert {p.stat().st_uid for p in (data, data / "old.ipynb", data / ".local")} == {host_uid}
        assert data.stat().st_mode & 0o777 == 0o700
        rc, out = embedded_hub.exec("oldhome", ["sh", "-c", "cat old.ipynb && touch new && ls -n new"])
        assert rc == 0 and out.startswith("{}"), out
    finally:
        embedded_hub.stop("oldhome")


def _files(data: Path) -> dict[str, tuple[int, int]]:
    out = {".": (data.lstat().st_uid, data.lstat().st_gid)}
    for path in data.rglob("*"):
        out[str(path.relative_to(data))] = (path.lstat().st_uid, path.lstat().st_gid)
    return out


def test_a_settled_home_starts_without_the_ownership_walk(embedded_hub: EmbeddedHub) -> None:
    """The first start walks the home into the user's ids and records it; the next start
    leaves the files alone (a deeper file with another id of the block keeps it), until an
    entry at the top has foreign ownership: then the walk runs and repairs everything."""
    embedded_hub.spawn("walked", "default", groups=("astro",))
    try:
        host_uid = _ids(int(embedded_hub.container("walked").attrs["State"]["Pid"]))[0][0]
    finally:
        embedded_hub.stop("walked")
    data = Path(embedded_hub.docker.volumes.get(HOME_VOLUME.format(username="walked")).attrs["Mountpoint"])
    owner = (data.stat().st_uid, data.stat().st_gid)
    assert owner[0] == host_uid
    (data / "deep").mkdir()
    (data / "deep" / "kept.txt").write_text("mine")
    os.chown(data / "deep", *owner)
    os.chown(data / "deep" / "kept.txt", host_uid + 5, owner[1])

    embedded_hub.spawn("walked", "default", groups=("astro",))
    try:
        assert (data / "deep" / "kept.txt").stat().st_uid == host_uid + 5  # not walked
        assert "is owned through its id block already: no ownership walk" in embedded_hub.hub_log(400)
        rc, out = embedded_hub.exec("walked", ["sh", "-c", "touch again && ls -n again"])
        assert rc == 0, out
    finally:
        embedded_hub.stop("walked")

    (data / "copied-in.txt").write_text("an admin's copy, owned by root")
    embedded_hub.spawn("walked", "default", groups=("astro",))
    try:
        block = range(host_uid - 1000, host_uid - 1000 + 65536)
        assert {uid for uid, _ in _files(data).values()} == {host_uid}, _files(data)
        assert all(gid in block for _, gid in _files(data).values()), _files(data)
    finally:
        embedded_hub.stop("walked")
