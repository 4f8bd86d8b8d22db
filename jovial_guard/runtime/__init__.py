"""The embedded container engine: a project-owned podman Docker API and the notebook image."""

from .podman import EngineUnavailable, PodmanService

__all__ = ["EngineUnavailable", "PodmanService"]
