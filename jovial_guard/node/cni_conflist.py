"""Chain ``jovial-guard-egress`` into the node's existing CNI configuration list.

The network plugin's own DaemonSet writes the conflist (``/etc/cni/net.d/10-*.conflist``);
the agent appends its entry after the last plugin, as Istio's CNI agent does, and checks it
again every pass because a network plugin may rewrite its file on restart. The entry stays
when the agent stops: pods in the guarded namespaces then wait for it (fail closed) instead
of starting without rules. The runtime picks up the changed file by itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import Misconfigured
from .cni_plugin import PLUGIN_TYPE


def entry(*, socket: Path, namespaces: Sequence[str]) -> dict[str, Any]:
    return {"type": PLUGIN_TYPE, "socket": str(socket), "namespaces": sorted(namespaces)}


def chained(conflist: Any, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """``conflist`` with ``wanted`` as its last plugin; None when it already is (pure)."""
    plugins = conflist.get("plugins") if isinstance(conflist, dict) else None
    if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) for p in plugins):
        raise Misconfigured("the CNI conflist has no 'plugins' list to chain into (a single-plugin .conf is not supported)")
    others = [p for p in plugins if p.get("type") != PLUGIN_TYPE]
    if not others:
        raise Misconfigured(f"the CNI conflist has no network plugin before {PLUGIN_TYPE}")
    if plugins == [*others, wanted]:
        return None
    return {**conflist, "plugins": [*others, wanted]}


def ensure_chained(path: Path, wanted: dict[str, Any]) -> bool:
    """Rewrite ``path`` (atomically) if ``wanted`` is not its last plugin; True if it changed."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Misconfigured(f"cannot read the CNI conflist {path}: {exc}") from None
    new = chained(doc, wanted)
    if new is None:
        return False
    try:
        atomic_write(path, (json.dumps(new, indent=2) + "\n").encode(), mode=0o644)
    except OSError as exc:
        raise Misconfigured(f"cannot write the CNI conflist {path}: {exc}") from None
    return True
