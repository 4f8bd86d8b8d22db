"""Policy data a deployment sets on top of the shipped ``policies/data.json``.

The Helm chart passes the hub identity, exemptions, per-rule enforcement modes and egress
settings as an overlay (a JSON document shaped like ``data.json``). Each webhook pod copies
the shipped policies into a scratch directory and merges the overlay into its ``data.json``
before OPA starts, so OPA loads one data document (two files defining the same key would
be a merge conflict) and the revision reflects the settings actually in force.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..policy.opa_process import policy_revision


class OverlayError(ValueError):
    """The overlay cannot be merged (names the file and what is wrong)."""


def merge(base: Any, overlay: Any) -> Any:
    """``overlay`` over ``base``: objects merge key by key; anything else replaces."""
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return overlay


def prepare_policies(source: Path, overlay_file: Path | None, dest: Path) -> str:
    """Copy ``source`` to ``dest``, merge the overlay into its data.json, return the revision.

    ``dest`` must not exist yet: a half-prepared directory is never reused.
    """
    if dest.exists():
        raise OverlayError(f"{dest} already exists; prepare into a fresh directory")
    overlay: Any = {}
    if overlay_file is not None:
        try:
            overlay = json.loads(overlay_file.read_text())
        except (OSError, ValueError) as exc:
            raise OverlayError(f"policy overlay {overlay_file} is not readable JSON: {exc}") from exc
        if not isinstance(overlay, dict):
            raise OverlayError(f"policy overlay {overlay_file} must be a JSON object like policies/data.json")
    shutil.copytree(source, dest)
    data_file = dest / "data.json"
    data = json.loads(data_file.read_text())
    data_file.write_text(json.dumps(merge(data, overlay), indent=2, sort_keys=True) + "\n")
    return policy_revision(dest)
