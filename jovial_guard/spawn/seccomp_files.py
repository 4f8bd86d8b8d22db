"""Which seccomp file the engine gets for a decision's profile, for one spawn.

The decision names a profile (``Localhost jovial-guard/<name>.json``); the file is
``<profile dir>/<name>.json``, or, with the audit service's seccomp agent configured, its
audited variant (every EPERM refusal handed to the agent, which answers EPERM and records
it). Anything missing refuses the spawn: a mistake never gives a weaker container.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ..decision import ProfileRef
from ..errors import JovialGuardError
from ..hardening import seccomp
from ..hardening.audit_netlink import SyscallNames
from ..hardening.seccomp_notify import write_audited
from .refusals import SpawnRefused


class SeccompFiles:
    """The hub's profile directory and, optionally, its seccomp agent."""

    def __init__(self, *, profile_dir: str, agent_socket: str = "", audited_dir: str = "",
                 agent_wait: float = 0.0) -> None:
        self.profile_dir = profile_dir
        self.agent_socket = agent_socket
        self.audited_dir = audited_dir
        self.agent_wait = agent_wait
        self._native_syscalls: frozenset[str] | None = None
        #: (profile, dirs, socket) -> (source, (source stamp, handed-out stamp), handed-out path)
        self._validated: dict[tuple[str, ...], tuple[Path, tuple[_Stamp | None, _Stamp | None], str]] = {}

    @property
    def audited(self) -> bool:
        return bool(self.agent_socket)

    async def await_agent(self) -> None:
        """Give an agent that is still starting (the audit service starts with the hub) a
        few seconds; :meth:`file_for` refuses the spawn if it never comes."""
        if not self.agent_socket:
            return
        deadline = time.monotonic() + self.agent_wait
        while not Path(self.agent_socket).is_socket() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    def file_for(self, ref: ProfileRef) -> str:
        """The validated profile file the engine gets for ``ref``; SpawnRefused otherwise.

        A file validated (and, with the agent, written) for an earlier spawn is reused while
        neither the profile nor the file handed out changed on disk (same inode, size and
        modification time): a replaced or edited profile is validated again.
        """
        if ref.type != "Localhost":
            # RuntimeDefault: the engine's own default filter; the path is not used.
            return str(Path(self.profile_dir).absolute())
        key = (str(ref.localhost_profile), self.profile_dir, self.agent_socket, self.audited_dir)
        cached = self._validated.get(key)
        if cached is not None and self._unchanged(cached) and (
                not self.agent_socket or Path(self.agent_socket).is_socket()):
            return cached[2]
        self._validated.pop(key, None)
        chosen = self._file_for(ref)
        try:
            source = seccomp.localhost_profile_file(ref.localhost_profile, self.profile_dir)
        except JovialGuardError:  # changed since: not cached, the next spawn meets it
            return chosen
        stamps = (_stamp(source), _stamp(Path(chosen)))
        if None not in stamps:
            self._validated[key] = (source, stamps, chosen)
        return chosen

    @staticmethod
    def _unchanged(cached: tuple[Path, tuple[_Stamp | None, _Stamp | None], str]) -> bool:
        source, (source_stamp, chosen_stamp), chosen = cached
        return _stamp(source) == source_stamp and _stamp(Path(chosen)) == chosen_stamp

    def _file_for(self, ref: ProfileRef) -> str:
        try:
            source = seccomp.localhost_profile_file(ref.localhost_profile, self.profile_dir)
        except JovialGuardError as exc:
            raise SpawnRefused(
                f"The notebook security profile is unavailable ({exc}), so no server can be "
                "started. Tell the platform admins.",
                rule="jovial-guard/seccomp-profile-missing", status_code=503,
            ) from exc
        if not self.agent_socket:
            return str(source)
        if not Path(self.agent_socket).is_socket():
            raise SpawnRefused(
                f"The seccomp audit agent is not running ({self.agent_socket} is "
                "missing), so no server can be started. Try again in a minute; if it "
                "persists, tell the platform admins.",
                rule="jovial-guard/seccomp-agent-unavailable", status_code=503,
            )
        try:
            if self._native_syscalls is None:
                self._native_syscalls = SyscallNames().all_names()
            return str(write_audited(
                source, name=str(ref.localhost_profile), listener=Path(self.agent_socket),
                directory=Path(self.audited_dir), native=self._native_syscalls))
        except (JovialGuardError, OSError) as exc:
            raise SpawnRefused(
                f"The audited notebook security profile could not be written ({exc}), so no "
                "server can be started. Tell the platform admins.",
                rule="jovial-guard/seccomp-profile-missing", status_code=503,
            ) from exc


_Stamp = tuple[int, int, int]


def _stamp(path: Path) -> _Stamp | None:
    """(inode, size, mtime in ns) of ``path``, or None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
