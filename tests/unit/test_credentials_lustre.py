"""The Lustre command plan for a sample grant, checked against a literal plan."""

from __future__ import annotations

import pytest

from jovial_guard.credentials.backends.lustre import render_plan
from jovial_guard.credentials.grant import Grant

NOW = 1_764_230_400


def _grant(mode: str = "rw") -> Grant:
    return Grant(
        user="alice",
        uid=1000,
        gid=100,
        fileset="home/alice",
        mode=mode,  # type: ignore[arg-type]
        mount_path="/lustre/home",
        nodemap="jg-alice",
        issued=NOW,
        expires=NOW + 28800,
        serial="00112233445566778899aabbccddeeff",
        secret=bytes(range(32)),
    )


def test_plan_for_sample_grant() -> None:
    plan = render_plan(
        _grant(), fsname="astro", mgs_nids=("10.0.0.1@tcp",), client_nids=("10.0.1.5@tcp",), fs_uid=51000, fs_gid=5100
    )
    assert [(s.where, s.command) for s in plan.apply] == [
        ("MGS", "lctl nodemap_add jg-alice"),
        ("MGS", "lctl nodemap_add_range --name jg-alice --range 10.0.1.5@tcp"),
        ("MGS", "lctl nodemap_add_idmap --name jg-alice --idtype uid --idmap 1000:51000"),
        ("MGS", "lctl nodemap_add_idmap --name jg-alice --idtype gid --idmap 100:5100"),
        ("MGS", "lctl nodemap_set_fileset --name jg-alice --fileset /home/alice"),
        ("MGS", "lctl nodemap_modify --name jg-alice --property admin --value 0"),
        ("MGS", "lctl nodemap_modify --name jg-alice --property trusted --value 0"),
        ("MGS", "lctl nodemap_modify --name jg-alice --property deny_unknown --value 1"),
        ("MGS", "lctl nodemap_modify --name jg-alice --property squash_uid --value 65534"),
        ("MGS", "lctl nodemap_modify --name jg-alice --property squash_gid --value 65534"),
        ("MGS", "lctl nodemap_activate 1"),
        (
            "MGS",
            "lgss_sk -t server -f astro -n jg-alice -e 28800 -d /etc/lustre/keys/jg-alice.data "
            "-w /etc/lustre/keys/jg-alice.server.key",
        ),
        (
            "MGS",
            "lgss_sk -t client -f astro -n jg-alice -e 28800 -g 10.0.0.1@tcp -d /etc/lustre/keys/jg-alice.data "
            "-w /etc/lustre/keys/jg-alice.client.key",
        ),
        ("MDS+OSS", "lgss_sk -l /etc/lustre/keys/jg-alice.server.key"),
        ("client node (agent)", "lgss_sk -l /etc/lustre/keys/jg-alice.client.key"),
        (
            "client node (agent)",
            "mount -t lustre -o rw,skpath=/etc/lustre/keys/jg-alice.client.key,nosuid,nodev "
            "10.0.0.1@tcp:/astro/home/alice /run/jovial-guard/storage/staging/alice/home",
        ),
        ("MGS", "shred -u /etc/lustre/keys/jg-alice.data"),
    ]
    assert [s.command for s in plan.revoke] == [
        "umount -l /run/jovial-guard/storage/staging/alice/home",
        "shred -u /etc/lustre/keys/jg-alice.client.key",
        "lctl nodemap_del jg-alice",
        "shred -u /etc/lustre/keys/jg-alice.server.key",
    ]
    assert plan.key_files == {"jg-alice.data": (0o600, bytes(range(32)))}
    text = plan.render()
    assert "# [MGS] one nodemap per user grant" in text
    assert bytes(range(32)).hex() not in text  # the plan text carries no key data


def test_read_only_grant_adds_readonly_mount() -> None:
    plan = render_plan(_grant("ro"), fsname="astro", mgs_nids=("10.0.0.1@tcp",), client_nids=("10.0.1.5@tcp",))
    commands = [s.command for s in plan.apply]
    assert "lctl nodemap_modify --name jg-alice --property readonly_mount --value 1" in commands
    assert any(c.startswith("mount -t lustre -o ro,") for c in commands)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"fsname": "Astro!"}, "fsname"),
        ({"mgs_nids": ("10.0.0.1; rm -rf /",)}, "NID"),
        ({"client_nids": ()}, "at least one"),
    ],
)
def test_bad_arguments_refused(kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"fsname": "astro", "mgs_nids": ("10.0.0.1@tcp",), "client_nids": ("10.0.1.5@tcp",)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        render_plan(_grant(), **args)  # type: ignore[arg-type]
