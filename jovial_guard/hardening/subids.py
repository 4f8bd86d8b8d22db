"""The host's subordinate id range the project's engine maps user containers into.

Why a range of our own: every user's container runs in a user namespace whose ids map to a
block of host ids no real account owns, a different block per user (:mod:`.userns`). Those
blocks come from one range recorded in ``/etc/subuid`` and ``/etc/subgid`` under the
project's service account ``jovial-guard`` (a locked system account without a shell or
home: it exists so no login account can later be created under that name and claim the
range with ``newuidmap``). The engine's storage names the same account
(``root-auto-userns-user``), so podman validates against exactly this range.

The default range starts at 1,000,000,000 and holds 16,384 blocks of 65,536 ids: above
``SUB_UID_MAX`` of Debian's ``login.defs`` (where ``useradd`` hands out ranges) and below
2^31, so no tool that reads ids as signed 32-bit numbers sees a negative one.

:func:`check_range` is pure (tested with literal files); :func:`ensure_host_range` is what
set-up runs (``python -m jovial_guard.hardening.subids``): idempotent, it prints every change
it makes to the host and refuses, changing nothing, when the range would overlap a real
account, the login id range or another account's subordinate range.
"""

from __future__ import annotations

import grp
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import Misconfigured

ACCOUNT = "jovial-guard"
DEFAULT_START = 1_000_000_000
BLOCK = 65_536
DEFAULT_BLOCKS = 16_384
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
LOGIN_DEFS = Path("/etc/login.defs")


class SubidRangeMissing(Misconfigured):
    """The project's subordinate id range is absent or unusable; no user namespace is made."""


@dataclass(frozen=True)
class IdRange:
    """``count`` host ids from ``start``: one line of ``/etc/subuid`` (``name:start:count``)."""

    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last id."""
        return self.start + self.count

    def overlaps(self, other: IdRange) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end - 1}"


def parse_subid(text: str) -> list[tuple[str, IdRange]]:
    """Entries of a subuid/subgid file (pure); malformed lines are skipped, as shadow-utils does."""
    entries = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or line.lstrip().startswith("#"):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            entries.append((fields[0], IdRange(start, count)))
    return entries


def login_defs_ranges(text: str) -> dict[str, IdRange]:
    """``UID``/``GID``/``SUB_UID``/``SUB_GID`` ranges of login.defs (pure; missing keys skipped)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            try:
                values[fields[0]] = int(fields[1])
            except ValueError:
                continue
    out = {}
    for key in ("UID", "GID", "SUB_UID", "SUB_GID"):
        low, high = values.get(f"{key}_MIN"), values.get(f"{key}_MAX")
        if low is not None and high is not None and high >= low:
            out[key] = IdRange(low, high - low + 1)
    return out


def check_range(
    wanted: IdRange, *, kind: str, subid_text: str, login_defs_text: str, account_ids: list[int],
    account: str = ACCOUNT,
) -> list[str]:
    """Why ``wanted`` may not be the project's ``kind`` (``uid``/``gid``) range (pure; [] = fine).

    ``account_ids``: every id of that kind that ``/etc/passwd`` (or ``/etc/group``) uses.
    """
    problems = []
    if wanted.count < BLOCK:
        problems.append(f"the {kind} range {wanted} holds fewer than one block of {BLOCK} ids")
    if wanted.end > 2**31:
        problems.append(f"the {kind} range {wanted} reaches past 2^31-1")
    ranges = login_defs_ranges(login_defs_text)
    login = ranges.get(kind.upper())
    if login is not None and wanted.overlaps(login):
        problems.append(f"the {kind} range {wanted} overlaps login.defs {kind.upper()}_MIN..MAX ({login})")
    for name, other in parse_subid(subid_text):
        if name != account and wanted.overlaps(other):
            problems.append(f"the {kind} range {wanted} overlaps {name}'s subordinate range {other}")
    taken = sorted(i for i in account_ids if wanted.start <= i < wanted.end)
    if taken:
        problems.append(f"the {kind} range {wanted} contains ids of real accounts: {taken[:5]}")
    return problems


def project_range(path: Path, *, account: str = ACCOUNT) -> IdRange:
    """The account's one range in ``path``; raises SubidRangeMissing naming the set-up step."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SubidRangeMissing(
            f"{path} cannot be read ({exc.strerror}): run scripts/setup.d/10-subids.sh as root"
        ) from None
    found = [r for name, r in parse_subid(text) if name == account]
    if not found:
        raise SubidRangeMissing(
            f"{path} has no range for {account!r}: run scripts/setup.d/10-subids.sh as root "
            "(it adds one and says what it changes)"
        )
    if len(found) > 1:
        raise SubidRangeMissing(f"{path} has {len(found)} ranges for {account!r}; keep exactly one")
    return found[0]


def _account_ids(kind: str) -> list[int]:
    if kind == "uid":
        return [p.pw_uid for p in pwd.getpwall()]
    return [g.gr_gid for g in grp.getgrall()]


def ensure_host_range(
    *, start: int = DEFAULT_START, count: int = DEFAULT_BLOCKS * BLOCK, account: str = ACCOUNT,
    subuid: Path = SUBUID, subgid: Path = SUBGID, login_defs: Path = LOGIN_DEFS,
) -> list[str]:
    """Make the host hold the project's account and range (idempotent); the changes made.

    An existing entry for ``account`` is kept as it is (an admin may have chosen another
    range) but still checked. Raises SubidRangeMissing, changing nothing, on any conflict.
    """
    wanted = IdRange(start, count)
    defs = login_defs.read_text() if login_defs.exists() else ""
    plan: list[tuple[Path, IdRange]] = []
    problems: list[str] = []
    for kind, path in (("uid", subuid), ("gid", subgid)):
        text = path.read_text() if path.exists() else ""
        existing = [r for name, r in parse_subid(text) if name == account]
        target = existing[0] if existing else wanted
        problems += check_range(target, kind=kind, subid_text=text, login_defs_text=defs,
                                account_ids=_account_ids(kind), account=account)
        if not existing:
            plan.append((path, wanted))
    if problems:
        raise SubidRangeMissing("the project's subordinate id range cannot be used:\n  - "
                                + "\n  - ".join(problems))
    changes = []
    try:
        pwd.getpwnam(account)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--user-group", account], check=True)
        changes.append(f"added the locked system account {account!r} (no shell, no home)")
    for path, added in plan:
        with path.open("a") as handle:
            handle.write(f"{account}:{added.start}:{added.count}\n")
        changes.append(f"added {account}:{added.start}:{added.count} to {path} (host ids {added})")
    return changes


def main() -> int:
    try:
        changes = ensure_host_range()
    except (SubidRangeMissing, OSError, subprocess.CalledProcessError) as exc:
        print(f"subordinate ids: {exc}", file=sys.stderr)
        return 2
    if not changes:
        uids = project_range(SUBUID)
        print(f"subordinate ids: {ACCOUNT} holds host ids {uids} in {SUBUID} and {SUBGID} (unchanged)")
    for change in changes:
        print(f"subordinate ids: host change: {change}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
