"""What the webhook records on an admitted pod for the hub and the node agent.

On Kubernetes the webhook is the one place that asks the policy about a pod; others act on
what it recorded instead of deciding again. Two annotations, whose values come only from the
decision (a value a creator wrote is replaced, or removed when the decision names none):

* ``jovial-guard.io/storage``: the storage the decision staged on the node (a versioned JSON
  object: fileset, mode, mount path, uid, gid). The hub issues exactly that grant, for the
  staging directory the webhook mounted into the pod (:mod:`jovial_guard.kube.grants`).
* ``jovial-guard.io/notebook: "true"``: the policy treats the pod as a user's notebook
  (``lib.is_notebook``: the notebook labels, a claimed hub user or profile, a notebook name).
  The node agent loads notebook egress rules into such a pod's network namespace
  (:mod:`jovial_guard.node.egress`), so a pod that is a notebook only by its name or claims
  gets them too.

Pure; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..decision import SecuritySpec
from ..hardening.render_pod import escape_pointer

Op = dict[str, Any]

STORAGE_ANNOTATION = "jovial-guard.io/storage"
NOTEBOOK_ANNOTATION = "jovial-guard.io/notebook"
#: The record's format version: the first field of the object.
RECORD_VERSION = 1


@dataclass(frozen=True)
class StorageRecord:
    """The storage a pod's decision named (what the hub issues a grant for)."""

    fileset: str
    mode: str
    mount_path: str
    uid: int
    gid: int

    def to_annotation(self) -> str:
        return json.dumps({"v": RECORD_VERSION, "fileset": self.fileset, "mode": self.mode,
                           "mount_path": self.mount_path, "uid": self.uid, "gid": self.gid},
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_annotation(cls, text: str) -> StorageRecord:
        """Parse the annotation; ValueError naming what is wrong (the hub then refuses the spawn)."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError(f"annotation {STORAGE_ANNOTATION} is not JSON") from None
        if not isinstance(doc, dict) or doc.get("v") != RECORD_VERSION:
            raise ValueError(f"annotation {STORAGE_ANNOTATION} is not a version {RECORD_VERSION} storage record")
        fields = {"fileset": str, "mode": str, "mount_path": str, "uid": int, "gid": int}
        for name, kind in fields.items():
            value = doc.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"annotation {STORAGE_ANNOTATION}: {name} is missing or not a {kind.__name__}")
        return cls(fileset=doc["fileset"], mode=doc["mode"], mount_path=doc["mount_path"], uid=doc["uid"],
                   gid=doc["gid"])


def storage_record(spec: SecuritySpec) -> StorageRecord | None:
    """The record for a decision: only storage staged on a node (``node_stage``) is granted by the hub."""
    storage = spec.storage
    if storage is None or not storage.node_stage:
        return None
    return StorageRecord(fileset=storage.fileset, mode=storage.mode, mount_path=storage.mount_path,
                         uid=spec.uid, gid=spec.gid)


def read_storage_record(pod: dict[str, Any]) -> StorageRecord | None:
    """The storage record on a stored pod (camelCase manifest), None when it names none."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(STORAGE_ANNOTATION)
    return None if text is None else StorageRecord.from_annotation(str(text))


def recorded(spec: SecuritySpec) -> dict[str, str | None]:
    """The annotations a decision records (None: the annotation must be absent)."""
    record = storage_record(spec)
    return {NOTEBOOK_ANNOTATION: "true" if spec.notebook else None,
            STORAGE_ANNOTATION: record.to_annotation() if record is not None else None}


def record_ops(pod: dict[str, Any], spec: SecuritySpec, earlier: list[Op]) -> list[Op]:
    """Operations (against ``pod``) that make its recorded annotations exactly the decided ones.

    ``earlier`` are the operations rendered before these (one of them may create ``/metadata``).
    """
    wanted = recorded(spec)
    present = {key: value for key, value in wanted.items() if value is not None}
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        if not present:
            return []
        if any(op["op"] == "add" and op["path"] == "/metadata" for op in earlier):
            return [{"op": "add", "path": "/metadata/annotations", "value": present}]
        return [{"op": "add", "path": "/metadata", "value": {"annotations": present}}]
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": present}] if present else []
    ops: list[Op] = []
    for key, value in wanted.items():
        path = f"/metadata/annotations/{escape_pointer(key)}"
        if annotations.get(key) == value:
            continue
        if value is None:
            if key in annotations:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops
