"""`jovial-guard check`'s engine: files in, one result per document out.

Kept apart from the click command so tests and the benchmark call the same path. One
OPA answers a whole batch, a few dozen documents per query (``PolicyEngine.decide_batch``),
or the compiled policy does in process (:mod:`.wasm_engine`, the default of ``check``).
Documents are read by :mod:`jovial_guard.documents` (the webhook's parser, with the same
bounds); a malformed document is reported with its file and index and the rest of the batch
is still decided. Objects whose kind has no pod template (a Service beside a Deployment) are
reported as not applicable, not as errors.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decision import MALFORMED_INPUT, Decision, Reason
from ..documents import BOUNDS, Bounds, Format, read_stream
from ..errors import MalformedInput
from ..hardening.render_pod import render_pod_patch, reroot_patch
from ..normalize import NoPodTemplate, workload_from_document
from ..workload import Workload
from .client import OpaConnection, OpaEndpoint
from .engine import PolicyEngine
from .wasm_engine import WasmConnection

#: ``policy_revision`` of a result no policy was asked about.
NOT_DECIDED = "n/a"


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
    #: Position in a ``kind: List``'s items (the patch is rooted at the document).
    item: int | None = None
    #: False for kinds without a pod template: reported, not decided, not a failure.
    applicable: bool = True
    kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "index": self.index,
            "allowed": self.allowed,
            "reasons": self.reasons,
            "patch": self.patch,
            "policy_revision": self.policy_revision,
        }
        if self.item is not None:
            out["item"] = self.item
        if self.error is not None:
            out["error"] = self.error
        if not self.applicable:
            out["applicable"] = False
            out["kind"] = self.kind
        return out


@dataclass
class Document:
    file: str
    index: int
    body: Any = None
    error: str | None = None
    item: int | None = None
    line: int = 1


#: ``check -`` reads standard input (once).
STDIN = "-"


def _read_bytes(path: str, bounds: Bounds) -> bytes:
    """At most ``max_stream_bytes + 1`` bytes, so an endless input cannot exhaust memory."""
    if path == STDIN:
        return sys.stdin.buffer.read(bounds.max_stream_bytes + 1)
    with open(path, "rb") as fh:
        return fh.read(bounds.max_stream_bytes + 1)


def _format_of(path: str) -> Format:
    suffix = Path(path).suffix.lower()
    return "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else "auto"


def read_documents(path: str, *, data: bytes | None = None, bounds: Bounds = BOUNDS) -> Iterator[Document]:
    """Every document of a YAML/JSON file (``-``: stdin), ``kind: List`` items flattened.

    A document that cannot be read becomes an error document; the others are still read.
    """
    if data is None:
        try:
            data = _read_bytes(path, bounds)
        except OSError as exc:
            yield Document(path, 0, error=f"cannot read file: {exc.strerror or exc}")
            return
    for parsed in read_stream(data, fmt=_format_of(path), bounds=bounds):
        if parsed.error is not None:
            yield Document(path, parsed.index, error=parsed.error, line=parsed.line)
            continue
        yield from _list_items(Document(path, parsed.index, body=parsed.body, line=parsed.line))


def _list_items(doc: Document) -> Iterator[Document]:
    """The document itself, or each item of a List (``kubectl get pods -o yaml``)."""
    body = doc.body
    kind = body.get("kind") if isinstance(body, dict) else None
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in body):
        yield doc
        return
    items = body["items"]
    if not isinstance(items, list):
        yield Document(doc.file, doc.index, error=f"{kind}: items must be a list", line=doc.line)
        return
    # A typed list from the API (PodList) leaves out each item's kind.
    item_kind = kind[: -len("List")] if kind != "List" else None
    for n, item in enumerate(items):
        if isinstance(item, dict) and item_kind and "kind" not in item:
            item = {"kind": item_kind, **item}
        if isinstance(item, dict) and isinstance(item.get("kind"), str) and item["kind"].endswith("List") and "items" in item:
            yield Document(doc.file, doc.index, error="a List inside a List is not a Kubernetes object", item=n, line=doc.line)
            continue
        yield Document(doc.file, doc.index, body=item, item=n, line=doc.line)


def document_patch(doc: Document, workload: Workload, decision: Decision) -> list[dict[str, Any]]:
    """The patch against the document as written (a review's or a List's object is nested)."""
    if not decision.allowed or decision.spec is None:
        return []
    ops = reroot_patch(render_pod_patch(workload.pod, decision.spec), workload.pod_path)
    if isinstance(doc.body, dict) and doc.body.get("kind") == "AdmissionReview":
        ops = reroot_patch(ops, "/request/object")
    if doc.item is not None:
        ops = reroot_patch(ops, f"/items/{doc.item}")
    return ops


async def check_documents(documents: list[Document], engine: PolicyEngine) -> list[CheckResult]:
    """Decide every well-formed document concurrently; keep malformed ones as errors."""
    prepared: list[tuple[Document, Workload | None, str | None, str | None]] = []
    for doc in documents:
        if doc.error is not None:
            prepared.append((doc, None, doc.error, None))
            continue
        try:
            prepared.append((doc, workload_from_document(doc.body), None, None))
        except NoPodTemplate as exc:
            prepared.append((doc, None, None, exc.kind))
        except MalformedInput as exc:
            prepared.append((doc, None, str(exc), None))
    workloads = [w for _, w, _, _ in prepared if w is not None]
    decisions = iter(await engine.decide_batch(workloads))
    results: list[CheckResult] = []
    for doc, workload, error, other_kind in prepared:
        if other_kind is not None:
            results.append(CheckResult(doc.file, doc.index, True, [], [], NOT_DECIDED, item=doc.item,
                                       applicable=False, kind=other_kind))
            continue
        if workload is None:
            reason = Reason(MALFORMED_INPUT, error or "malformed")
            results.append(
                CheckResult(doc.file, doc.index, False, [reason.to_json()], [], "unknown", error=error, item=doc.item)
            )
            continue
        decision = next(decisions)
        results.append(
            CheckResult(
                file=doc.file,
                index=doc.index,
                allowed=decision.allowed,
                reasons=[r.to_json() for r in decision.reasons],
                patch=document_patch(doc, workload, decision),
                policy_revision=decision.policy_revision,
                warnings=list(decision.warnings),
                item=doc.item,
            )
        )
    return results


async def check_files(paths: list[str], source: OpaEndpoint | WasmConnection, *,
                      deadline: float) -> list[CheckResult]:
    """Decide the documents of ``paths`` with the OPA at ``source``, or with the compiled
    policy ``source`` holds."""
    documents = [doc for path in paths for doc in read_documents(path)]
    if isinstance(source, WasmConnection):
        return await check_documents(documents, PolicyEngine(source, deadline=deadline))
    async with OpaConnection(source, timeout=deadline) as connection:
        engine = PolicyEngine(connection, deadline=deadline)
        return await check_documents(documents, engine)


def run_check(paths: list[str], source: OpaEndpoint | WasmConnection, *, deadline: float) -> list[CheckResult]:
    return asyncio.run(check_files(paths, source, deadline=deadline))


def exit_code(results: list[CheckResult]) -> int:
    """0 all allowed or not applicable, 1 any denied, 2 any malformed document."""
    if any(r.error is not None for r in results):
        return 2
    return 0 if all(r.allowed for r in results) else 1
