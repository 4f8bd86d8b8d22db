"""The embedded container engine: a project-owned podman Docker API and the notebook image.

The engine's names load on first use: the node agent imports :mod:`.procfs` from here and
runs where the Docker client (the hub's dependency) is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .podman import EngineUnavailable, PodmanService

__all__ = ["EngineUnavailable", "PodmanService"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import podman

        return getattr(podman, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
