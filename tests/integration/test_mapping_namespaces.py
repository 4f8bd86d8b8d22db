"""The mapping namespaces idmapped storage mounts go through, kept open per mapping: one
child process per mapping (not per mount), each descriptor holding exactly its mapping,
the least recently used closed beyond the bound and made again when asked for."""

from __future__ import annotations

import os
import subprocess

import pytest

from jovial_guard.credentials.backends.idmapped import MappingNamespaces
from jovial_guard.hardening.userns import IdMap

pytestmark = pytest.mark.integration

# Far above any block the project's range hands out in tests; only written into maps.
ALICE = IdMap(host_start=1_900_000_000)
BOB = IdMap(host_start=1_900_065_536)
CAROL = IdMap(host_start=1_900_131_072)


def _uid_map(fd: int) -> list[str]:
    """The uid_map a process sees inside the user namespace open at ``fd``, as fields."""
    return subprocess.run(["nsenter", f"--user=/proc/self/fd/{fd}", "cat", "/proc/self/uid_map"],
                          pass_fds=(fd,), capture_output=True, text=True, check=True).stdout.split()


def _expected(id_map: IdMap) -> list[str]:
    """The uid_map fields of a namespace holding exactly ``id_map``."""
    return ["0", str(id_map.host_start), str(id_map.size)]


def test_one_namespace_per_mapping_with_exactly_that_mapping() -> None:
    mappings = MappingNamespaces(keep=2)
    try:
        first, again = mappings.descriptor(ALICE), mappings.descriptor(ALICE)
        try:
            assert mappings.made == 1
            assert first != again and os.fstat(first).st_ino == os.fstat(again).st_ino
            assert _uid_map(again) == _expected(ALICE)
        finally:
            os.close(first)
            os.close(again)
        bob = mappings.descriptor(BOB)
        try:
            assert mappings.made == 2
            assert _uid_map(bob) == _expected(BOB)
        finally:
            os.close(bob)
    finally:
        mappings.close()


def test_beyond_the_bound_the_least_recently_used_is_made_again() -> None:
    mappings = MappingNamespaces(keep=2)
    try:
        for id_map in (ALICE, BOB, ALICE, CAROL):  # bob is the least recently used at carol
            os.close(mappings.descriptor(id_map))
        assert mappings.made == 3
        os.close(mappings.descriptor(ALICE))
        assert mappings.made == 3
        held = mappings.descriptor(BOB)
        try:
            assert mappings.made == 4
            assert _uid_map(held) == _expected(BOB)
        finally:
            os.close(held)
    finally:
        mappings.close()
