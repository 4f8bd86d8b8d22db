"""Literals more than one module must agree on: protocol versions and annotation keys.

Each is written once here, because every copy that was written twice has drifted once
(a Docker API version per client, two spellings of the profile annotation). Paths are
in :mod:`jovial_guard.paths`.
"""

from __future__ import annotations

#: The Docker API version podman 4.3's service speaks (PLATFORM-NOTES); every docker-py
#: client the project makes (DockerSpawner, the audit's event stream, the podman service
#: check) asks for exactly this one.
DOCKER_API_VERSION = "1.41"

#: Annotation keys the project reads from pods and writes into the workloads it builds.
#: The domain form (``jovial-guard.io/...``) is the Kubernetes convention for a prefix.
ANNOTATION_PREFIX = "jovial-guard.io/"
PROFILE_ANNOTATION = ANNOTATION_PREFIX + "profile"
GROUPS_ANNOTATION = ANNOTATION_PREFIX + "groups"
ADMIN_ANNOTATION = ANNOTATION_PREFIX + "admin"

__all__ = [
    "DOCKER_API_VERSION",
    "ANNOTATION_PREFIX",
    "PROFILE_ANNOTATION",
    "GROUPS_ANNOTATION",
    "ADMIN_ANNOTATION",
]
