"""The four kinds of failure jovial_guard raises on purpose, each with one HTTP status and exit code.

Every deliberate error derives from exactly one of four kinds, so a caller (the webhook, the
pre-spawn hook, a CLI command) maps it without knowing the concrete class:

* :class:`MalformedInput`: 400, exit 2. The caller sent something that cannot be decided.
* :class:`Denied`: 403, exit 1. A decision (or a credential check) said no.
* :class:`Unavailable`: 503, exit 2. A dependency (OPA, the engine, the hub) did not answer.
* :class:`Misconfigured`: 503, exit 2. The operator's setup is wrong (key file, profile, rules).

Why these numbers: a misconfiguration is the operator's to fix, so the user sees 503 ("not
available right now"), never 403 ("you may not"). Exit code 2 is the shell's "fix the input or
the setup" (as for a usage error); 1 is "the answer is no", so ``check`` scripts can keep
treating non-zero as "not allowed". Unavailable exits 2 too: for the person at the terminal an
OPA that is down or a wrong URL is a setup to fix, like a missing file, and the one line says
which; only "no" has a code of its own.

None of them is ever turned into an allow: every enforcement point fails closed.
"""

from __future__ import annotations

from typing import ClassVar


class JovialGuardError(Exception):
    """Base class for every error jovial_guard raises on purpose.

    Subclasses derive from one of the four kinds below; a bare ``JovialGuardError`` is
    treated as unavailable (fail closed, retry later).
    """

    http_status: ClassVar[int] = 503
    exit_code: ClassVar[int] = 2


class MalformedInput(JovialGuardError):
    """The input cannot be decided: not a pod, bad JSON, a field of the wrong type.

    ``where`` names the place (file, document index, JSON pointer) so a human can fix it.
    """

    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2

    def __init__(self, problem: str, *, where: str = "") -> None:
        self.problem = problem
        self.where = where
        super().__init__(f"{where}: {problem}" if where else problem)


class Denied(JovialGuardError):
    """A decision said no: the policy, a revoked or expired grant, a refused deploy."""

    http_status: ClassVar[int] = 403
    exit_code: ClassVar[int] = 1


class Unavailable(JovialGuardError):
    """A dependency could not be asked or did not answer in time (OPA, the engine, the hub)."""

    http_status: ClassVar[int] = 503
    exit_code: ClassVar[int] = 2


class Misconfigured(JovialGuardError):
    """The operator's setup is wrong: a key file, a profile, a rules file, a missing setting."""

    http_status: ClassVar[int] = 503
    exit_code: ClassVar[int] = 2


class PolicyEngineUnavailable(Unavailable):
    """OPA could not be asked, or did not answer in time, or answered nonsense."""


class MalformedDecision(PolicyEngineUnavailable):
    """OPA answered, but not with a decision document we understand (fail closed)."""


class PolicyDenied(Denied):
    """A decision denied the workload; ``decision`` carries the reasons."""

    def __init__(self, decision: object) -> None:
        self.decision = decision
        reasons = getattr(decision, "reasons", ())
        super().__init__("; ".join(f"[{r.rule}] {r.message}" for r in reasons) or "denied")


__all__ = [
    "JovialGuardError",
    "MalformedInput",
    "Denied",
    "Unavailable",
    "Misconfigured",
    "PolicyEngineUnavailable",
    "MalformedDecision",
    "PolicyDenied",
]
