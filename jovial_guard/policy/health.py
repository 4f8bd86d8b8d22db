"""A synchronous probe of a running OPA's health, for start-up checks.

The hub asks once before it serves anyone: a hub whose policy engine is unreachable would
refuse every spawn, so it says so at start with the reason instead.
"""

from __future__ import annotations


def opa_health_problem(url: str, token: str, ca_file: str) -> str | None:
    """A synchronous start-up probe of OPA's /health; an error message or None."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(
            url.rstrip("/") + "/health", headers=headers, timeout=3,
            verify=ca_file or True,
        )
    except requests.RequestException as exc:
        return f"the policy engine (OPA) at {url} is unreachable: {type(exc).__name__}"
    if resp.status_code != 200:
        return f"the policy engine (OPA) at {url} is not healthy (HTTP {resp.status_code})"
    return None
