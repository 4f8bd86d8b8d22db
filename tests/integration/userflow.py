"""What a person does in the browser, over HTTP: log in, pick a profile, run a cell.

Used by the integration tests and runnable by hand against ``jovial-guard up``::

    python tests/integration/userflow.py http://127.0.0.1:8000 alice PASSWORD
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from typing import Any

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def _xsrf(session: requests.Session, html: str) -> str:
    match = re.search(r'name="_xsrf"\s+value="([^"]+)"', html)
    if match:
        return match.group(1)
    return session.cookies.get("_xsrf", "")


def _page_text(html: str) -> str:
    """The visible text of an error page (what the user reads)."""
    body = re.sub(r"(?s)<(script|style).*?</\1>", " ", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()


def login(url: str, username: str, password: str) -> requests.Session:
    """Log in through the hub's login form; raises if the hub refuses."""
    session = requests.Session()
    page = session.get(f"{url}/hub/login", timeout=30)
    page.raise_for_status()
    resp = session.post(
        f"{url}/hub/login?next=", timeout=30, allow_redirects=True,
        data={"username": username, "password": password, "_xsrf": _xsrf(session, page.text)},
    )
    if "jupyterhub-session-id" not in session.cookies and resp.url.endswith("/hub/login"):
        raise RuntimeError(f"login as {username} failed (HTTP {resp.status_code})")
    return session


def spawn_from_form(session: requests.Session, url: str, username: str, profile: str,
                    timeout: float = 120) -> str:
    """Submit the spawn page's profile form; return the server's error text or ''."""
    form = session.get(f"{url}/hub/spawn/{username}", timeout=30)
    if 'name="profile"' in form.text:
        resp = session.post(f"{url}/hub/spawn/{username}", timeout=timeout,
                            data={"profile": profile, "_xsrf": _xsrf(session, form.text)})
        if resp.status_code >= 400:
            return _page_text(resp.text)
    elif f"/user/{username}/" not in form.url:
        raise RuntimeError(f"the spawn page shows no profile form ({form.url})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = session.get(f"{url}/user/{username}/api/status", timeout=30,
                             headers=_auth(session, url, username))
        if status.status_code == 200 and status.headers.get("content-type", "").startswith(
                "application/json"):
            return ""
        progress = session.get(f"{url}/hub/api/users/{username}/server/progress", timeout=30,
                               stream=True)
        text = ""
        for line in progress.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                text = str(event.get("message", ""))
                if event.get("failed"):
                    return text
                if event.get("ready"):
                    break
        time.sleep(0.5)
    raise TimeoutError(f"{username}'s server not ready after the form")


def _auth(session: requests.Session, url: str, username: str) -> dict[str, str]:
    """A token for the user's own server, made from the web session (the Token page does
    the same). The image has no web front end, so the server is driven over its API."""
    token = getattr(session, "jovial_guard_token", None)
    if token is None:
        xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
        resp = session.post(f"{url}/hub/api/users/{username}/tokens", timeout=30,
                            json={"note": "userflow", "expires_in": 3600},
                            headers={"X-XSRFToken": xsrf})
        resp.raise_for_status()
        token = resp.json()["token"]
        session.jovial_guard_token = token  # type: ignore[attr-defined]
    return {"Authorization": f"token {token}"}


async def _run_cell(url: str, username: str, session: requests.Session, code: str,
                    timeout: float) -> dict[str, Any]:
    base = f"{url}/user/{username}"
    headers = _auth(session, url, username)
    kernel = session.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers,
                          timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    ws_url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers=headers, connect_timeout=30))
    msg_id = uuid.uuid4().hex
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": username, "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    out: dict[str, Any] = {"stdout": "", "status": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and out["status"] is None:
        raw = await asyncio.wait_for(conn.read_message(), timeout=timeout)
        if raw is None:
            break
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out["stdout"] += msg["content"].get("text", "")
        elif kind == "error":
            out["error"] = msg["content"].get("evalue", "")
        elif kind == "execute_reply":
            out["status"] = msg["content"].get("status")
    conn.close()
    session.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=30)
    return out


def run_cell(url: str, username: str, session: requests.Session, code: str,
             timeout: float = 60) -> dict[str, Any]:
    """Execute ``code`` in a fresh kernel of the user's server; stdout and status."""
    return asyncio.run(_run_cell(url, username, session, code, timeout))


if __name__ == "__main__":  # pragma: no cover - manual use
    hub_url, user, password = sys.argv[1:4]
    s = login(hub_url, user, password)
    error = spawn_from_form(s, hub_url, user, sys.argv[4] if len(sys.argv) > 4 else "default")
    print("spawn:", error or "ready")
    if not error:
        print(run_cell(hub_url, user, s, "import numpy, astropy; print(numpy.arange(4).sum(), astropy.__version__)"))
