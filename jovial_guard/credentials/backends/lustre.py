"""The ``lustre`` backend: the real administration a grant needs, rendered as a plan.

This machine has no Lustre MGS, so nothing here runs ``lctl``: :func:`render_plan` is a pure
function from a grant to a reviewable, ordered command plan plus the key files it needs,
saying for each step *where* it runs (MGS, MDS/OSS servers, the client node's agent).
An admin (or automation with MGS access) reviews and executes it. See docs/credentials.md.

What the plan does for a grant (one nodemap per user):

* ``lctl nodemap_add`` a nodemap named after the grant; ``nodemap_add_range`` the client
  NID(s) the user's mounts come from (a per-user LNet NID on the node);
* ``nodemap_add_idmap`` the container uid/gid to the filesystem uid/gid;
* ``nodemap_set_fileset`` so the nodemap sees only the user's subtree;
* ``nodemap_modify``: ``admin 0`` and ``trusted 0`` (root squashed, ids mapped),
  ``deny_unknown 1`` (unmapped ids get nothing), ``squash_uid``/``squash_gid`` nobody,
  ``readonly_mount 1`` for ``ro`` grants;
* shared-secret-key (SSK) material: ``lgss_sk`` writes a server and a client key for the
  nodemap from the grant's secret (its key data), with a session-context expiry; the keys
  are loaded on the servers and used by the client mount (``skpath=``);
* revocation: ``nodemap_del`` plus unloading/removing the keys, and the client unmount.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..grant import Grant

_NID = re.compile(r"^[0-9A-Za-z.:\[\]\-,*]+@[a-z]+[0-9]*$")
_FSNAME = re.compile(r"^[a-z][a-z0-9_]{0,7}$")

MGS = "MGS"
SERVERS = "MDS+OSS"
CLIENT = "client node (agent)"


@dataclass(frozen=True)
class PlanStep:
    where: str
    argv: tuple[str, ...]
    why: str

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class LustrePlan:
    serial: str
    nodemap: str
    apply: tuple[PlanStep, ...]
    revoke: tuple[PlanStep, ...]
    #: file name -> (mode, content); the ``.data`` file is secret key material (mode 0600).
    key_files: dict[str, tuple[int, bytes]] = field(repr=False)

    def render(self) -> str:
        lines = [f"# Lustre plan for grant {self.serial} (nodemap {self.nodemap})", "", "## apply"]
        for step in self.apply:
            lines += [f"# [{step.where}] {step.why}", step.command]
        lines += ["", "## revoke"]
        for step in self.revoke:
            lines += [f"# [{step.where}] {step.why}", step.command]
        lines += ["", "## key files (mode, name)"]
        lines += [f"# {mode:04o} {name}" for name, (mode, _) in sorted(self.key_files.items())]
        return "\n".join(lines) + "\n"


def render_plan(
    grant: Grant,
    *,
    fsname: str,
    mgs_nids: tuple[str, ...],
    client_nids: tuple[str, ...],
    fs_uid: int | None = None,
    fs_gid: int | None = None,
    key_dir: str = "/etc/lustre/keys",
    squash_id: int = 65534,
    mount_root: str = "/run/jovial-guard/storage/staging",
) -> LustrePlan:
    """Pure: the command plan and key files for ``grant``. Raises ValueError on a bad argument."""
    if not _FSNAME.match(fsname):
        raise ValueError(f"fsname {fsname!r}: expected a Lustre fsname (1-8 chars, [a-z0-9_])")
    for nid in (*mgs_nids, *client_nids):
        if not _NID.match(nid):
            raise ValueError(f"NID {nid!r}: expected LNet NID syntax like 10.0.0.5@tcp or 10.0.0.[5-6]@o2ib")
    if not mgs_nids or not client_nids:
        raise ValueError("mgs_nids and client_nids must each name at least one NID")
    name = grant.nodemap
    fsu = grant.uid if fs_uid is None else fs_uid
    fsg = grant.gid if fs_gid is None else fs_gid
    lifetime = max(grant.expires - grant.issued, 60)
    data_file = f"{key_dir}/{name}.data"
    server_key = f"{key_dir}/{name}.server.key"
    client_key = f"{key_dir}/{name}.client.key"
    mgs = ":".join(mgs_nids)
    target = f"{mount_root}/{grant.user}/{grant.mount_leaf}"

    def lctl(*args: str) -> tuple[str, ...]:
        return ("lctl", *args)

    apply = [
        PlanStep(MGS, lctl("nodemap_add", name), "one nodemap per user grant"),
        *(
            PlanStep(
                MGS, lctl("nodemap_add_range", "--name", name, "--range", nid), "the NID this user's mounts come from"
            )
            for nid in client_nids
        ),
        PlanStep(
            MGS,
            lctl("nodemap_add_idmap", "--name", name, "--idtype", "uid", "--idmap", f"{grant.uid}:{fsu}"),
            "container uid -> filesystem uid",
        ),
        PlanStep(
            MGS,
            lctl("nodemap_add_idmap", "--name", name, "--idtype", "gid", "--idmap", f"{grant.gid}:{fsg}"),
            "container gid -> filesystem gid",
        ),
        PlanStep(
            MGS,
            lctl("nodemap_set_fileset", "--name", name, "--fileset", f"/{grant.fileset}"),
            "the nodemap sees only this subtree",
        ),
        PlanStep(
            MGS, lctl("nodemap_modify", "--name", name, "--property", "admin", "--value", "0"), "root is squashed"
        ),
        PlanStep(
            MGS,
            lctl("nodemap_modify", "--name", name, "--property", "trusted", "--value", "0"),
            "ids are mapped, not trusted",
        ),
        PlanStep(
            MGS,
            lctl("nodemap_modify", "--name", name, "--property", "deny_unknown", "--value", "1"),
            "unmapped ids are denied, not squashed",
        ),
        PlanStep(
            MGS,
            lctl("nodemap_modify", "--name", name, "--property", "squash_uid", "--value", str(squash_id)),
            "squash target uid",
        ),
        PlanStep(
            MGS,
            lctl("nodemap_modify", "--name", name, "--property", "squash_gid", "--value", str(squash_id)),
            "squash target gid",
        ),
    ]
    if grant.mode == "ro":
        apply.append(
            PlanStep(
                MGS,
                lctl("nodemap_modify", "--name", name, "--property", "readonly_mount", "--value", "1"),
                "read-only grant: clients of this nodemap may only mount read-only (Lustre >= 2.15)",
            )
        )
    apply += [
        PlanStep(MGS, lctl("nodemap_activate", "1"), "nodemaps enforced (no-op if already active)"),
        PlanStep(
            MGS,
            (
                "lgss_sk",
                "-t",
                "server",
                "-f",
                fsname,
                "-n",
                name,
                "-e",
                str(lifetime),
                "-d",
                data_file,
                "-w",
                server_key,
            ),
            "SSK server key for the nodemap, from the grant's key data; contexts expire with the grant",
        ),
        PlanStep(
            MGS,
            (
                "lgss_sk",
                "-t",
                "client",
                "-f",
                fsname,
                "-n",
                name,
                "-e",
                str(lifetime),
                "-g",
                mgs,
                "-d",
                data_file,
                "-w",
                client_key,
            ),
            "SSK client key, handed to the node agent sealed (never to the container)",
        ),
        PlanStep(
            SERVERS,
            ("lgss_sk", "-l", server_key),
            "load the server key into the servers' keyring (lsvcgssd -s -k running)",
        ),
        PlanStep(CLIENT, ("lgss_sk", "-l", client_key), "agent loads the client key into its own session keyring"),
        PlanStep(
            CLIENT,
            (
                "mount",
                "-t",
                "lustre",
                "-o",
                f"{'ro' if grant.mode == 'ro' else 'rw'},skpath={client_key},nosuid,nodev",
                f"{mgs}:/{fsname}/{grant.fileset}",
                target,
            ),
            "agent mounts the subtree on the user's staging dir; propagates into the container",
        ),
        PlanStep(MGS, ("shred", "-u", data_file), "key data not needed once both keys are written"),
    ]
    revoke = (
        PlanStep(CLIENT, ("umount", "-l", target), "cut access in the running container"),
        PlanStep(CLIENT, ("shred", "-u", client_key), "remove the client key"),
        PlanStep(MGS, lctl("nodemap_del", name), "the nodemap (and so the fileset and idmap) is gone"),
        PlanStep(SERVERS, ("shred", "-u", server_key), "remove the server key; its contexts expire"),
    )
    key_files = {f"{name}.data": (0o600, grant.secret)}
    return LustrePlan(serial=grant.serial, nodemap=name, apply=tuple(apply), revoke=revoke, key_files=key_files)
