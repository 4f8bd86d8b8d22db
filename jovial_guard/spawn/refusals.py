"""How the guard says no: at start-up (the hub must not start) and per spawn (the user
sees the reason on the spawn page and in the REST API answer)."""

from __future__ import annotations

from typing import Any

from tornado import web

from ..decision import ENGINE_UNAVAILABLE, Decision
from ..errors import JovialGuardError

#: What a user reads while the policy engine cannot answer: no URL, no exception class
#: (those go to the hub log), and what to do.
ENGINE_UNAVAILABLE_MESSAGE = (
    "Your server was not started: the policy service is restarting, try again in a minute. "
    "[policy-engine-unavailable]"
)


class StartupRefused(JovialGuardError):
    """The hub must not start: a piece of the hardening is missing. The message says which."""


class SpawnRefused(web.HTTPError):
    """A spawn the guard refuses; JupyterHub relays ``jupyterhub_message`` to the user.

    ``rule`` is the policy rule id (or ``jovial-guard/...`` for a refusal made here).
    """

    def __init__(self, message: str, *, rule: str, status_code: int = 403) -> None:
        super().__init__(status_code, "%s", message)
        self.rule = rule
        self.jupyterhub_message = message
        self.decision: Decision | None = None

    def __str__(self) -> str:
        return self.jupyterhub_message


def decision_refusal(decision: Decision, spawner: Any) -> SpawnRefused:
    """The refusal a denied or undecidable spawn raises: the policy's own message for a
    denial (it says what to change), a plain one when the engine could not decide (the
    detail goes to the hub log)."""
    if any(r.rule == ENGINE_UNAVAILABLE for r in decision.reasons):
        spawner.log.warning("jovial_guard: no decision for %s: %s", spawner._log_name, decision.message())
        refused = SpawnRefused(ENGINE_UNAVAILABLE_MESSAGE, rule=ENGINE_UNAVAILABLE, status_code=503)
    else:
        refused = SpawnRefused(
            f"Your server was not started: {decision.message()}",
            rule=decision.reasons[0].rule if decision.reasons else "denied",
        )
    refused.decision = decision
    return refused
