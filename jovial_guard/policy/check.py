"""`jovial-guard check`'s engine: files in, one result per document out.

Kept apart from the click command so tests and the benchmark call the same path. One
OPA answers a whole batch, a few dozen documents per query (``PolicyEngine.decide_batch``);
a malformed document is reported with its file and index and the rest of the batch is
still decided.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..decision import MALFORMED_INPUT, Decision, Reason
from ..errors import MalformedInput
from ..hardening.render_pod import render_pod_patch, reroot_patch
from ..normalize import workload_from_document
from ..workload import Workload
from .client import OpaConnection, OpaEndpoint
from .engine import PolicyEngine


@dataclass
class CheckResult:
    """One line of ``check --format jsonl``."""

    file: str
    index: int
    allowed: bool
    reasons: list[dict[str, str]]
    patch: list[dict[str, Any]]
    policy_revision: str
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "index": self.index,
            "allowed": self.allowed,
            "reasons": self.reasons,
            "patch": self.patch,
            "policy_revision": self.policy_revision,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Document:
    file: str
    index: int
    body: Any = None
    error: str | None = None


def read_documents(path: str) -> Iterator[Document]:
    """Every document of a YAML/JSON file; a parse error becomes an error document."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        yield Document(path, 0, error=f"cannot read file: {exc.strerror or exc}")
        return
    if path.endswith(".json"):
        try:
            yield Document(path, 0, body=json.loads(text))
        except json.JSONDecodeError as exc:
            yield Document(path, 0, error=f"invalid JSON: {exc}")
        return
    index = 0
    try:
        for body in yaml.safe_load_all(text):
            if body is None:
                continue
            yield Document(path, index, body=body)
            index += 1
    except yaml.YAMLError as exc:
        yield Document(path, index, error=f"invalid YAML: {exc}".replace("\n", " "))


def document_patch(doc: Any, workload: Workload, decision: Decision) -> list[dict[str, Any]]:
    """The patch against the document as written (an AdmissionReview's object is nested)."""
    if not decision.allowed or decision.spec is None:
        return []
    ops = reroot_patch(render_pod_patch(workload.pod, decision.spec), workload.pod_path)
    if isinstance(doc, dict) and doc.get("kind") == "AdmissionReview":
        ops = reroot_patch(ops, "/request/object")
    return ops


async def check_documents(documents: list[Document], engine: PolicyEngine) -> list[CheckResult]:
    """Decide every well-formed document concurrently; keep malformed ones as errors."""
    prepared: list[tuple[Document, Workload | None, str | None]] = []
    for doc in documents:
        if doc.error is not None:
            prepared.append((doc, None, doc.error))
            continue
        try:
            prepared.append((doc, workload_from_document(doc.body), None))
        except MalformedInput as exc:
            prepared.append((doc, None, str(exc)))
    workloads = [w for _, w, _ in prepared if w is not None]
    decisions = iter(await engine.decide_batch(workloads))
    results: list[CheckResult] = []
    for doc, workload, error in prepared:
        if workload is None:
            reason = Reason(MALFORMED_INPUT, error or "malformed")
            results.append(
                CheckResult(doc.file, doc.index, False, [reason.to_json()], [], "unknown", error=error)
            )
            continue
        decision = next(decisions)
        results.append(
            CheckResult(
                file=doc.file,
                index=doc.index,
                allowed=decision.allowed,
                reasons=[r.to_json() for r in decision.reasons],
                patch=document_patch(doc.body, workload, decision),
                policy_revision=decision.policy_revision,
                warnings=list(decision.warnings),
            )
        )
    return results


async def check_files(paths: list[str], endpoint: OpaEndpoint, *, deadline: float) -> list[CheckResult]:
    documents = [doc for path in paths for doc in read_documents(path)]
    async with OpaConnection(endpoint, timeout=deadline) as connection:
        engine = PolicyEngine(connection, deadline=deadline)
        return await check_documents(documents, engine)


def run_check(paths: list[str], endpoint: OpaEndpoint, *, deadline: float) -> list[CheckResult]:
    return asyncio.run(check_files(paths, endpoint, deadline=deadline))


def exit_code(results: list[CheckResult]) -> int:
    """0 all allowed, 1 any denied, 2 any malformed document (usage/input error)."""
    if any(r.error is not None for r in results):
        return 2
    return 0 if all(r.allowed for r in results) else 1
