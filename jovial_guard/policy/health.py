"""A synchronous probe of a running OPA's health, for start-up checks.

The hub asks once before it serves anyone: a hub whose policy engine is unreachable would
refuse every spawn, so it says so at start with the reason instead.
"""

from __future__ import annotations

from pathlib import Path


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


def bundle_health_problem(source: str, public_key: Path, key_id: str) -> str | None:
    """A synchronous start-up load of the signed bundle a hub decides with (``wasm``):
    fetched, verified with ``public_key``/``key_id`` and its compiled policy read; an
    error message or None."""
    import requests

    from .bundles import BundleError
    from .wasm_bundle import WasmBundleError, load_verified

    try:
        if source.startswith(("http://", "https://")):
            resp = requests.get(source, timeout=3)
            if resp.status_code != 200:
                return f"the policy bundle at {source} is not served (HTTP {resp.status_code})"
            blob = resp.content
        else:
            blob = Path(source).read_bytes()
        load_verified(blob, public_key=public_key, key_id=key_id)
    except (requests.RequestException, OSError) as exc:
        return f"the policy bundle at {source} is unreachable: {type(exc).__name__}"
    except (BundleError, WasmBundleError) as exc:
        return f"the policy bundle at {source} is refused: {exc}"
    return None
