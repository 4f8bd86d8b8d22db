"""Asking OPA which fileset, mode and mount path a workload's user gets.

The answer is ``data.jovial_guard.storage.grant`` (policies/storage/storage.rego). This
module only asks and checks the shape; it never decides. "No grant" is a normal answer
(the user gets no storage, :func:`storage_grant_for` returns ``None``); a malformed answer
or OPA trouble raises, and the caller fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PolicyEngineUnavailable
from ..policy.client import OpaConnection
from ..workload import Workload
from .errors import StoragePolicyError
from .grant import is_safe_fileset

PACKAGE = "jovial_guard.storage"
RULE = "grant"


@dataclass(frozen=True)
class StorageParams:
    fileset: str
    mode: str
    mount_path: str

    @classmethod
    def from_json(cls, doc: Any) -> StorageParams:
        if not isinstance(doc, dict):
            raise StoragePolicyError(f"data.{PACKAGE}.{RULE} is not an object: {doc!r}")
        fileset, mode, mount_path = doc.get("fileset"), doc.get("mode"), doc.get("mount_path")
        if (
            not is_safe_fileset(fileset)
            or mode not in ("ro", "rw")
            or not isinstance(mount_path, str)
            or not mount_path.startswith("/")
        ):
            raise StoragePolicyError(f"data.{PACKAGE}.{RULE} is malformed: {doc!r}")
        return cls(fileset=str(fileset), mode=str(mode), mount_path=mount_path)


async def storage_grant_for(connection: OpaConnection, workload: Workload) -> StorageParams | None:
    """The policy's storage parameters for ``workload``'s user, or ``None`` for "no storage"."""
    try:
        doc = await connection.query(PACKAGE, RULE, workload.to_input())
    except PolicyEngineUnavailable as exc:
        if "returned no result" in str(exc):
            return None
        raise
    return StorageParams.from_json(doc)
