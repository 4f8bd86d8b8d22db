"""What the webhook records on an admitted pod for the hub: the storage the policy decided.

On Kubernetes the webhook is the one place that asks the policy about a notebook pod; the
hub must issue exactly the storage grant that decision names, for the staging directory the
webhook mounted into the pod. So the mutating webhook writes the decision's storage into the
pod's annotation ``jovial-guard.io/storage`` (a versioned JSON object: fileset, mode, mount
path, uid, gid), and the hub reads it back from the pod it created. The value comes only from
the decision: an annotation a creator wrote is replaced, or removed when the decision names
no staged storage, so nothing but the policy decides which fileset a pod's user is granted.
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


def record_ops(pod: dict[str, Any], spec: SecuritySpec, earlier: list[Op]) -> list[Op]:
    """Operations (against ``pod``) that make its storage annotation exactly the decided one.

    ``earlier`` are the operations rendered before these (one of them may create ``/metadata``).
    """
    record = storage_record(spec)
    wanted = record.to_annotation() if record is not None else None
    path = f"/metadata/annotations/{escape_pointer(STORAGE_ANNOTATION)}"
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        if wanted is None:
            return []
        if any(op["op"] == "add" and op["path"] == "/metadata" for op in earlier):
            return [{"op": "add", "path": "/metadata/annotations", "value": {STORAGE_ANNOTATION: wanted}}]
        return [{"op": "add", "path": "/metadata", "value": {"annotations": {STORAGE_ANNOTATION: wanted}}}]
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [] if wanted is None else [{"op": "add", "path": "/metadata/annotations",
                                           "value": {STORAGE_ANNOTATION: wanted}}]
    if annotations.get(STORAGE_ANNOTATION) == wanted:
        return []
    if wanted is None:
        return [{"op": "remove", "path": path}]
    return [{"op": "add", "path": path, "value": wanted}]
