"""How the guard says no: at start-up (the hub must not start) and per spawn (the user
sees the reason on the spawn page and in the REST API answer)."""

from __future__ import annotations

from tornado import web

from ..decision import Decision
from ..errors import JovialGuardError


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
