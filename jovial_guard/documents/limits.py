"""Bounds and the error of :mod:`jovial_guard.documents`, shared by its JSON and YAML readers."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MalformedInput


@dataclass(frozen=True)
class Bounds:
    """Limits on one input; every one is far above any real Kubernetes object."""

    #: One request body (an AdmissionReview carries object and oldObject, each capped
    #: by the API server at ~1.5 MiB).
    max_body_bytes: int = 4 * 1024 * 1024
    #: One file or stdin for ``check`` (``kubectl get pods -A -o yaml`` of a large cluster).
    max_stream_bytes: int = 64 * 1024 * 1024
    #: Nesting of maps and lists; the deepest real pod field (a CronJob inside an
    #: AdmissionReview, down to an affinity term's values) is about 20.
    max_depth: int = 100
    #: Maps, lists and scalars of one document after alias expansion (a List of a few
    #: thousand pods stays below it).
    max_nodes: int = 2_000_000
    #: Nodes reached only through YAML aliases: bounds "billion laughs" expansion.
    max_alias_nodes: int = 100_000


BOUNDS = Bounds()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class MalformedDocument(MalformedInput):
    """The bytes are not a document jovial_guard will decide; the message says why."""
