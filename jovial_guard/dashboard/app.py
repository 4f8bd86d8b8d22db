"""The dashboard service: tornado handlers behind JupyterHub OAuth, admins only.

Run by the hub as a managed service (``jupyterhub_config.py``), which sets the
``JUPYTERHUB_*`` variables (API URL and token, service prefix and URL, OAuth client).
Anonymous visitors are redirected to the hub's login; an authenticated user without the
service's access scope is refused by the hub, and any authenticated non-admin that gets
through is refused here with 403 (two independent checks). Every page is read-only; the
dry-run form is a GET that starts two throw-away OPAs, one run at a time.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import (  # type: ignore[import-untyped]
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from jupyterhub.utils import url_path_join  # type: ignore[import-untyped]
from tornado import ioloop, web

from ..paths import HUB_STATE_ENV
from ..policy.decision_log import DecisionLog
from ..policy.lifecycle import DryRunReport, dry_run
from ..policy.store import PolicyStore, StoreError
from . import render
from .model import Checks
from .sources import (
    CandidateInvalid,
    Settings,
    audit_rows,
    current_revision,
    decision_rows,
    hub_servers,
    measure_checks,
    server_rows,
    validate_candidate,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardState:
    """What the handlers share: settings, the store, cached checks, the dry-run lock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = PolicyStore(settings.store_dir)
        self.checks: dict[str, Checks] = {}
        self._checks_lock = threading.Lock()
        self.dry_run_lock = asyncio.Lock()

    def checks_for(self, revision: str) -> Checks:
        """Lint/tests of a revision not deployed through the CLI (e.g. seeded at start-up);
        revisions are content hashes, so the result is cached for good."""
        with self._checks_lock:
            if revision not in self.checks:
                self.checks[revision] = measure_checks(self.store, revision)
            return self.checks[revision]


def require_admin(model: dict[str, Any] | None) -> dict[str, Any]:
    """The hub identity of an admin *user*, else UserNotAllowed (tornado then answers 403).

    Services and non-admin users are refused even if someone grants them the service's
    access scope: the dashboard shows every user's denials and hardening."""
    if not isinstance(model, dict) or model.get("kind", "user") != "user" or model.get("admin") is not True:
        raise UserNotAllowed(model or {"kind": "?", "name": "?"})
    return model


class AdminHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """Base: hub OAuth, admins only, security headers, accessible error pages."""

    state: DashboardState

    def initialize(self, state: DashboardState) -> None:
        self.state = state

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        return require_admin(super().check_hub_user(model))

    def set_default_headers(self) -> None:
        for key, value in SECURITY_HEADERS.items():
            self.set_header(key, value)
        self.set_header("Content-Type", "text/html; charset=utf-8")

    @property
    def prefix(self) -> str:
        return str(self.settings.get("service_prefix", "/"))

    def show(self, title: str, body: str, *, active: str) -> None:
        user = self.current_user.get("name") if isinstance(self.current_user, dict) else None
        self.finish(render.page(title, body, active=active, prefix=self.prefix, user=user))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if status_code == 403:
            message = "Forbidden: the jovial_guard dashboard is for hub admins only."
        self.finish(render.error_page(status_code, str(message), prefix=self.prefix))


class PolicyHandler(AdminHandler):
    @web.authenticated
    async def get(self) -> None:
        state = self.state
        revision = state.store.current()
        measured: dict[str, Checks] = {}
        if revision is not None:
            recorded = any(e.revision == revision and "tests" in e.details for e in _history(state.store))
            if not recorded:
                measured[revision] = await asyncio.to_thread(state.checks_for, revision)
        view = current_revision(state.store, measured=measured)
        rows = await asyncio.to_thread(decision_rows, state.settings.decision_log)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.revision] = counts.get(row.revision, 0) + 1
        self.show("Current policy", render.revision_page(view, decisions_by_revision=counts), active="")


class HistoryHandler(AdminHandler):
    @web.authenticated
    def get(self) -> None:
        try:
            entries = self.state.store.history()
        except StoreError as exc:
            self.show("Policy history", f'<p class="notice" role="alert">{render.esc(exc)}</p>', active="history")
            return
        self.show("Policy history", render.history_page(entries, current=self.state.store.current()), active="history")


class DenialsHandler(AdminHandler):
    @web.authenticated
    async def get(self) -> None:
        user = (self.get_argument("user", "") or "").strip()[:200] or None
        rows = await asyncio.to_thread(decision_rows, self.state.settings.decision_log, user=user)
        self.show("Recent denials", render.denials_page(rows, user_filter=user), active="denials")


class ServersHandler(AdminHandler):
    @web.authenticated
    async def get(self) -> None:
        settings = self.state.settings
        try:
            servers = await asyncio.to_thread(hub_servers, settings)
        except Exception as exc:  # noqa: BLE001 - say the hub did not answer, do not crash
            self.show("Running servers", f'<p class="notice" role="alert">The Hub API did not answer: '
                      f"{render.esc(type(exc).__name__)}: {render.esc(exc)}</p>", active="servers")
            return
        rows = await asyncio.to_thread(server_rows, settings, servers)
        self.show("Running servers", render.servers_page(rows), active="servers")


class AuditHandler(AdminHandler):
    @web.authenticated
    async def get(self) -> None:
        directory = self.state.settings.audit_dir
        rows = await asyncio.to_thread(audit_rows, directory)
        configured = directory is not None and directory.is_dir()
        self.show("Audit events and responses",
                  render.audit_page(rows, configured=configured, directory=str(directory) if directory else None),
                  active="audit")


class DryRunHandler(AdminHandler):
    @web.authenticated
    async def get(self) -> None:
        text = self.get_argument("candidate", "")
        if not text:
            self.show("Dry-run a candidate policy", render.dry_run_page("", None), active="dry-run")
            return
        try:
            candidate = validate_candidate(text)
        except CandidateInvalid as exc:
            self.set_status(400)
            self.show("Dry-run a candidate policy", render.dry_run_page(text, None, error=str(exc)), active="dry-run")
            return
        state = self.state
        baseline_rev = state.store.current()
        if baseline_rev is None:
            self.set_status(409)
            self.show("Dry-run a candidate policy",
                      render.dry_run_page(text, None, error="No revision is active to compare against."),
                      active="dry-run")
            return
        async with state.dry_run_lock:
            report = await asyncio.to_thread(_run_dry_run, state, candidate, baseline_rev)
        if isinstance(report, str):
            self.set_status(500)
            self.show("Dry-run a candidate policy", render.dry_run_page(text, None, error=report), active="dry-run")
            return
        self.show("Dry-run a candidate policy", render.dry_run_page(text, report, baseline=baseline_rev),
                  active="dry-run")


class NotFoundHandler(AdminHandler):
    """Any other path: login first (nothing is revealed anonymously), then our 404 page."""

    @web.authenticated
    def get(self) -> None:
        raise web.HTTPError(404, "No such page in the dashboard.")


def _run_dry_run(state: DashboardState, candidate: Path, baseline_rev: str) -> DryRunReport | str:
    """The lifecycle's dry-run on its own loop (it starts OPAs synchronously)."""
    records = list(DecisionLog(state.settings.decision_log).records())
    try:
        return asyncio.run(dry_run(records, baseline=state.store.source_dir(baseline_rev), candidate=candidate))
    except Exception as exc:  # noqa: BLE001 - a broken candidate is reported, not fatal
        return f"The dry-run failed: {type(exc).__name__}: {exc}"


def _history(store: PolicyStore) -> list[Any]:
    try:
        return store.history()
    except StoreError:
        return []


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """The service's settings from the hub-provided and jovial_guard variables."""
    env = dict(os.environ if env is None else env)
    state_dir = env.get(HUB_STATE_ENV)
    if not state_dir:
        raise SystemExit(f"jovial_guard dashboard: {HUB_STATE_ENV} is not set")
    audit = env.get("JOVIAL_GUARD_AUDIT_DIR")
    creds = env.get("JOVIAL_GUARD_CREDENTIALS_DIR") or str(Path(state_dir) / "credentials")
    return Settings(
        state_dir=Path(state_dir),
        hub_api_url=env.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
        api_token=env.get("JUPYTERHUB_API_TOKEN", ""),
        netns_prefix=env.get("JOVIAL_GUARD_NETNS_PREFIX", "jg"),
        egress_pool=env.get("JOVIAL_GUARD_EGRESS_POOL", ""),
        audit_dir=Path(audit) if audit else None,
        credentials_dir=Path(creds),
    )


def warm_checks(state: DashboardState) -> None:
    """Run the current revision's checks in the background at start, so the first page
    view does not wait for ``opa test`` (cached per revision)."""
    revision = state.store.current()
    if revision is not None and not any(e.revision == revision and "tests" in e.details
                                        for e in _history(state.store)):
        threading.Thread(target=state.checks_for, args=(revision,), daemon=True).start()


def make_app(settings: Settings, *, prefix: str, state: DashboardState | None = None) -> web.Application:
    state = state or DashboardState(settings)
    # The handlers (and the OAuth callback) use the class singleton, so configure that one.
    hub_auth = HubOAuth.instance(api_token=settings.api_token, cache_max_age=60)
    routes = [
        ("", PolicyHandler), ("history", HistoryHandler), ("denials", DenialsHandler),
        ("servers", ServersHandler), ("audit", AuditHandler), ("dry-run", DryRunHandler),
    ]
    handlers: list[Any] = [(url_path_join(prefix, path) if path else prefix, cls, {"state": state})
                           for path, cls in routes]
    handlers.append((url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler))
    handlers.append((url_path_join(prefix, ".*"), NotFoundHandler, {"state": state}))
    return web.Application(
        handlers,
        cookie_secret=secrets.token_bytes(32),
        login_url=hub_auth.login_url,
        service_prefix=prefix,
        xsrf_cookies=False,  # every page is a read-only GET
    )


def main() -> None:
    settings = settings_from_env()
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jovial-guard-dashboard/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    host = url.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"jovial_guard dashboard: refusing to listen on {host}: loopback only")
    from tornado.log import enable_pretty_logging

    enable_pretty_logging()  # access lines land in the hub's log, beside the hub's own
    state = DashboardState(settings)
    app = make_app(settings, prefix=prefix, state=state)
    warm_checks(state)
    app.listen(url.port or 10101, address=host, xheaders=True)
    print(f"jovial_guard dashboard on {host}:{url.port} at {prefix} ({time.strftime('%H:%M:%S')})",
          file=sys.stderr, flush=True)
    ioloop.IOLoop.current().start()
