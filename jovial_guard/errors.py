"""The few exceptions jovial_guard raises, each named for what failed.

"Malformed input" is kept apart from "policy says no": a caller that receives
:class:`MalformedInput` made a mistake in what it sent; a :class:`PolicyDenied` is a
decision. Neither is ever turned into an allow.
"""

from __future__ import annotations


class JovialGuardError(Exception):
    """Base class for every error jovial_guard raises on purpose."""


class MalformedInput(JovialGuardError):
    """The object handed to a normalizer is not something we can decide.

    ``where`` names the place (file, document index, JSON pointer) so a human can fix it.
    """

    def __init__(self, problem: str, *, where: str = "") -> None:
        self.problem = problem
        self.where = where
        super().__init__(f"{where}: {problem}" if where else problem)


class PolicyEngineUnavailable(JovialGuardError):
    """OPA could not be asked, or did not answer in time, or answered nonsense."""


class MalformedDecision(PolicyEngineUnavailable):
    """OPA answered, but not with a decision document we understand (fail closed)."""


class PolicyDenied(JovialGuardError):
    """A decision denied the workload; ``decision`` carries the reasons."""

    def __init__(self, decision: "object") -> None:
        self.decision = decision
        reasons = getattr(decision, "reasons", ())
        super().__init__("; ".join(f"[{r.rule}] {r.message}" for r in reasons) or "denied")
