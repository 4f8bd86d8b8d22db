"""The spawn page's profile picker (DockerSpawner ``options_form``/``options_from_form``).

Only offers a choice; whether a user may have the chosen profile is the policy's decision,
made in the pre-spawn hook. Descriptions are read from the policy data so the page and the
policy never disagree about what a profile is.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..policy.opa_process import DEFAULT_POLICY_DIR

FALLBACK_PROFILES = {
    "default": "Everyday analysis",
    "large-memory": "Large catalogues and images (members of large-memory)",
    "gpu": "Machine learning (GPU users)",
}


def profile_descriptions(data_file: Path = DEFAULT_POLICY_DIR / "data.json") -> dict[str, str]:
    """``{profile: description}`` from ``policies/data.json`` (fallback if unreadable)."""
    try:
        profiles = json.loads(data_file.read_text())["settings"]["profiles"]
        return {str(k): str(v.get("description", k)) for k, v in sorted(profiles.items())}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return dict(FALLBACK_PROFILES)


def render_options_form(profiles: Mapping[str, str], *, default: str) -> str:
    """HTML for the spawn page: one radio button per profile."""
    rows = []
    for name, description in profiles.items():
        checked = " checked" if name == default else ""
        rows.append(
            '<div class="radio"><label>'
            f'<input type="radio" name="profile" value="{html.escape(name)}"{checked}> '
            f"<strong>{html.escape(name)}</strong>: {html.escape(description)}"
            "</label></div>"
        )
    return (
        '<div class="form-group"><p>Choose a notebook profile. The policy decides whether '
        "your groups may use it; a refusal says why.</p>" + "".join(rows) + "</div>"
    )


def options_from_form(formdata: Mapping[str, Any]) -> dict[str, Any]:
    """Form data (lists of strings) to user_options ``{"profile": name}``."""
    values = formdata.get("profile") or []
    if isinstance(values, str):
        values = [values]
    return {"profile": str(values[0])} if values else {}
