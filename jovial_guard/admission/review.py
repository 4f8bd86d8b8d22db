"""AdmissionReview v1 wire format: parse the envelope, build responses. No I/O.

Two kinds of bad input are kept apart on purpose:

* an envelope we cannot answer at all (not JSON, past a bound of
  :data:`jovial_guard.documents.BOUNDS`, not ``admission.k8s.io/v1``, no ``uid``):
  :class:`MalformedReview`, which the server turns into HTTP 400 with the reason; the
  API server then applies the webhook's ``failurePolicy: Fail``, i.e. the request is refused;
* a well-formed envelope whose object cannot be decided: answered in-band with
  ``allowed: false`` and ``status.code`` 400, so the user sees why.

Neither can ever produce ``allowed: true``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ..documents import BOUNDS, MalformedDocument, load_json
from ..errors import MalformedInput

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: A uid is a UUID in practice; anything longer than this is not from an API server.
MAX_UID_LENGTH = 128
#: The API server shows at most a few warnings well; keep each short and printable.
MAX_WARNINGS = 10
MAX_WARNING_LENGTH = 240
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


class MalformedReview(MalformedInput):
    """The request body is not an AdmissionReview v1 we can answer (HTTP 400)."""


def parse_review(body: bytes) -> tuple[dict[str, Any], str]:
    """The review document and its request uid; raise MalformedReview otherwise."""
    if not body:
        raise MalformedReview("empty request body; expected an AdmissionReview v1 JSON object")
    if len(body) > BOUNDS.max_body_bytes:
        raise MalformedReview(f"request body is larger than {BOUNDS.max_body_bytes} bytes")
    try:
        # The parser and bounds `jovial-guard check` uses: a body it refuses, check refuses.
        review = load_json(body)
    except MalformedDocument as exc:
        raise MalformedReview(f"request body is {exc}" if str(exc).startswith("not JSON") else f"request body refused: {exc}") from None
    if not isinstance(review, dict):
        raise MalformedReview("AdmissionReview must be a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise MalformedReview(f"expected apiVersion {API_VERSION} and kind {KIND}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("AdmissionReview has no 'request' object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_LENGTH:
        raise MalformedReview(f"request.uid must be a non-empty string of at most {MAX_UID_LENGTH} characters")
    return review, uid


def request_kind(review: Mapping[str, Any]) -> str | None:
    """``request.kind.kind`` (what the API server says it sends), if well-formed."""
    gvk = review["request"].get("kind")
    if isinstance(gvk, dict) and isinstance(gvk.get("kind"), str):
        return str(gvk["kind"])
    return None


def clean_warning(text: str) -> str:
    """A warning the API server will pass on: printable ASCII, bounded length."""
    cleaned = _UNPRINTABLE.sub("?", text)
    return cleaned if len(cleaned) <= MAX_WARNING_LENGTH else cleaned[: MAX_WARNING_LENGTH - 3] + "..."


def encode_patch(ops: list[dict[str, Any]]) -> str:
    """RFC 6902 ops as the base64 the AdmissionReview's ``patch`` field carries."""
    return base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()


def dump_json(doc: Any) -> bytes:
    """Serialize a response body (fast path; the standard encoder if orjson refuses)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def build_response(
    uid: str,
    *,
    allowed: bool,
    code: int | None = None,
    message: str | None = None,
    reason: str | None = None,
    patch_b64: str | None = None,
    warnings: Iterable[str] = (),
    audit_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 response document.

    ``allowed`` must be a real bool: a truthy string must never become an allow.
    """
    if allowed is not True and allowed is not False:
        raise TypeError("allowed must be a bool")
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if code is not None or message is not None:
        status: dict[str, Any] = {}
        if code is not None:
            status["code"] = int(code)
        if message is not None:
            status["message"] = message
        if reason is not None:
            status["reason"] = reason
        if not allowed:
            status["status"] = "Failure"
        response["status"] = status
    if patch_b64 is not None:
        if not allowed:
            raise ValueError("a denial carries no patch")
        response["patchType"] = "JSONPatch"
        response["patch"] = patch_b64
    cleaned = [clean_warning(w) for w in warnings][:MAX_WARNINGS]
    if cleaned:
        response["warnings"] = cleaned
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def bad_request_body(problem: str) -> dict[str, Any]:
    """The JSON body of an HTTP 400: says what was wrong, allows nothing."""
    return {"error": "malformed AdmissionReview", "reason": problem, "allowed": False}
