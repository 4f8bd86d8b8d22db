"""The notebook AppArmor profile: validate it always, enforce it only where the kernel can.

Why both halves: a profile that does not compile must stop start-up everywhere (so a typo
never ships), but whether it can be *enforced* depends on the host kernel. On a kernel
without the AppArmor LSM the honest answer is "unsupported": callers record that in the
spawn's hardening report and never pass an ``apparmor=`` option the engine would ignore or
pretend to honour.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import Misconfigured, Unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_NAME = "jovial-guard-notebook"
ENABLED_PARAMETER = Path("/sys/module/apparmor/parameters/enabled")
#: The parser prints this on every run on a kernel without AppArmor; it is not an error.
_NOISE = "Cache read/write disabled"


class AppArmorProfileInvalid(Misconfigured):
    """The AppArmor profile is missing or does not compile; the parser's message says why."""


@dataclass(frozen=True)
class AppArmorSupport:
    """Whether this host can enforce AppArmor, and why not if it cannot."""

    supported: bool
    reason: str

    def __bool__(self) -> bool:
        """``if host_supports_apparmor():`` must mean what it says (a dataclass is truthy)."""
        return self.supported


def notebook_profile_path() -> Path:
    return REPO_ROOT / "profiles" / "apparmor" / PROFILE_NAME


def find_parser() -> str:
    found = shutil.which("apparmor_parser") or (
        "/sbin/apparmor_parser" if Path("/sbin/apparmor_parser").exists() else None
    )
    if not found:
        raise AppArmorProfileInvalid(
            "apparmor_parser is not installed: run scripts/install-system.sh (package apparmor)"
        )
    return found


def validate_profile(path: Path | str) -> Path:
    """Compile ``path`` without loading it (``apparmor_parser -QKT -o /dev/null``).

    Returns the absolute path; raises :class:`AppArmorProfileInvalid` carrying the
    parser's own message when the file is missing or does not compile.
    """
    file = Path(path).absolute()
    if not file.is_file():
        raise AppArmorProfileInvalid(f"AppArmor profile {file} does not exist")
    proc = subprocess.run(
        [find_parser(), "-QKT", "-o", "/dev/null", str(file)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    if proc.returncode != 0:
        message = "\n".join(
            line for line in (proc.stderr + proc.stdout).splitlines()
            if line.strip() and _NOISE not in line
        )
        raise AppArmorProfileInvalid(
            f"AppArmor profile {file} does not compile: {message or f'exit {proc.returncode}'}"
        )
    return file


def host_supports_apparmor(parameter: Path = ENABLED_PARAMETER) -> AppArmorSupport:
    """Read the kernel's own answer; anything but ``Y`` is unsupported."""
    try:
        value = parameter.read_text().strip()
    except FileNotFoundError:
        return AppArmorSupport(False, "the kernel has no AppArmor LSM "
                                      f"({parameter} does not exist)")
    except OSError as exc:
        return AppArmorSupport(False, f"cannot read {parameter}: {exc}")
    if value != "Y":
        return AppArmorSupport(False, f"AppArmor is disabled in the kernel ({parameter}={value})")
    return AppArmorSupport(True, "AppArmor LSM enabled")


def profile_loaded(name: str = PROFILE_NAME) -> bool:
    """True when ``name`` is loaded in the kernel (only meaningful when supported)."""
    try:
        text = Path("/sys/kernel/security/apparmor/profiles").read_text()
    except OSError:
        return False
    return any(line.split(" (")[0] == name for line in text.splitlines())


class AppArmorUnsupported(Unavailable):
    """The host kernel cannot enforce AppArmor; the reason says why. Never papered over."""


def load_profile(path: Path | str, *, support: AppArmorSupport | None = None) -> str:
    """Validate and load (replace) the profile into the kernel; return its name.

    Raises AppArmorUnsupported on a host without the LSM (callers record "unsupported" and
    do not pass ``apparmor=`` to the engine), AppArmorProfileInvalid if it does not compile
    or the kernel refuses it.
    """
    file = validate_profile(path)
    support = support or host_supports_apparmor()
    if not support.supported:
        raise AppArmorUnsupported(f"cannot load {file.name}: {support.reason}")
    proc = subprocess.run([find_parser(), "-r", "-W", str(file)], capture_output=True,
                          text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise AppArmorProfileInvalid(f"the kernel refused {file}: {proc.stderr.strip()}")
    if not profile_loaded(PROFILE_NAME):
        raise AppArmorProfileInvalid(f"{PROFILE_NAME} is not listed as loaded after loading {file}")
    return PROFILE_NAME
