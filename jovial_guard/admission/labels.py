"""The pod labels the policy renders, as JSON Patch operations. Pure; no I/O.

Some labels carry authority: the egress group labels select per-group NetworkPolicies.
Their values come from the decision (``SecuritySpec.pod_labels``, computed from the groups
the hub vouched for), never from whoever created the pod: every label under the
decision's ``managed_label_prefix`` that the decision does not name is removed, and every
label it names is set.
"""

from __future__ import annotations

from typing import Any

from ..decision import SecuritySpec
from ..hardening.render_pod import escape_pointer

Op = dict[str, Any]


def label_ops(pod: dict[str, Any], spec: SecuritySpec) -> list[Op]:
    """Operations (against ``pod``) that make its managed labels exactly the decided ones."""
    wanted = dict(spec.pod_labels)
    prefix = spec.managed_label_prefix
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": "/metadata", "value": {"labels": wanted}}] if wanted else []
    labels = metadata.get("labels")
    if not isinstance(labels, dict):
        return [{"op": "add", "path": "/metadata/labels", "value": wanted}] if wanted else []
    ops: list[Op] = []
    for key in sorted(labels):
        if prefix and key.startswith(prefix) and key not in wanted:
            ops.append({"op": "remove", "path": f"/metadata/labels/{escape_pointer(key)}"})
    for key, value in sorted(wanted.items()):
        if labels.get(key) != value:
            ops.append({"op": "add", "path": f"/metadata/labels/{escape_pointer(key)}", "value": value})
    return ops
