"""`JovialGuardKubeSpawner`: KubeSpawner for a cluster the jovial-guard webhook guards.

What it adds to KubeSpawner, all on the hub's side (the webhook decides and hardens):

* **Whose pod it is.** The default ``modify_pod_hook`` (:func:`identity_annotations`) writes
  the user's name, JupyterHub groups and chosen profile into the pod's annotations; the policy
  believes them only on pods the hub's service account created.
* **The policy's refusal on the spawn page.** When the webhook refuses the pod, the user reads
  the policy's message (:func:`policy_refusal`), not the API server's raw answer; any other
  failure is raised unchanged.
* **Storage grants** (``c.JovialGuardKubeSpawner.storage_grants = True``): once the pod has a
  node, the grant its decision names is delivered to that node's agent and the spawn waits
  until the fileset is mounted (:class:`~jovial_guard.kube.grants.KubeGrants`); a node
  without an agent key, or an agent that refuses or never answers, fails the spawn with that
  reason and the pod is deleted. Stopping the server withdraws the grant. ``poll`` (which the
  hub calls for running servers, after a restart too) keeps the withdraw/renew round going.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from kubespawner import KubeSpawner  # type: ignore[import-untyped]
from traitlets import Bool, Dict, default

from ..errors import JovialGuardError
from .grants import KubeGrants

#: The API server's wording when a webhook of ours (``*.jovial-guard.io``) refuses an object.
DENIAL_MARKER = '.jovial-guard.io" denied the request: '
#: The refusal as the spawn page shows it ("Spawn failed: " is JupyterHub's).
REFUSED_PREFIX = "the policy refused this server: "


def policy_refusal(exc: BaseException) -> str | None:
    """The policy's message in the API server's answer to a create, None if it is not ours."""
    try:
        message = json.loads(getattr(exc, "body", None) or "{}").get("message", "")
    except (TypeError, ValueError, AttributeError):
        return None
    if not isinstance(message, str) or DENIAL_MARKER not in message:
        return None
    return message.split(DENIAL_MARKER, 1)[1]


def identity_annotations(spawner: Any, pod: Any) -> Any:
    """KubeSpawner ``modify_pod_hook``: tell the webhook whose pod this is; it decides and hardens."""
    groups = sorted(g.name for g in spawner.user.groups)
    profile = (spawner.user_options or {}).get("profile") or "default"
    annotations = dict(pod.metadata.annotations or {})
    annotations["hub.jupyter.org/username"] = spawner.user.name
    annotations["jovial-guard.io/groups"] = json.dumps(groups)
    annotations["jovial-guard.io/profile"] = profile
    pod.metadata.annotations = annotations
    return pod


class JovialGuardKubeSpawner(KubeSpawner):  # type: ignore[misc]
    """KubeSpawner for a jovial-guard cluster (see the module docstring)."""

    storage_grants = Bool(
        False, config=True,
        help="""Deliver each server's storage grant (the fileset its pod's decision names) to the
        node agent of the pod's node, and withdraw it on stop. Needs node agents with credentials
        enabled and the hub's grant permissions (deploy/zero-to-jupyterhub/hub-grants-rbac.yaml);
        settings under ``c.KubeGrants`` and ``c.StorageCredentials``. Default False.""",
    )
    guard_storage = Dict(help="The grant the node agent mounted for this spawn (serial, node, fileset; no secret).")

    @default("modify_pod_hook")
    def _default_modify_pod_hook(self) -> Any:
        return identity_annotations

    def _grants(self) -> KubeGrants:
        return KubeGrants.instance(config=self.config, log=self.log)

    def _own_pod(self) -> dict[str, Any] | None:
        pod: dict[str, Any] | None = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
        return pod

    async def start(self) -> Any:
        started: asyncio.Future[Any] = asyncio.ensure_future(super().start())
        try:
            if self.storage_grants:
                attached = await self._grants().attach(user=self.user.name, pod=self._own_pod, started=started)
                self.guard_storage = asdict(attached) if attached is not None else {}
            return await started
        except Exception as exc:
            own = started.done() and not started.cancelled() and started.exception() is exc
            if not own:  # the grant failed: the pod must not run without it
                started.cancel()
                await self._stop_after_failure()
            refusal = policy_refusal(exc)
            if refusal is not None:
                raise RuntimeError(REFUSED_PREFIX + refusal) from None
            raise

    async def _stop_after_failure(self) -> None:
        try:
            await self.stop(now=True)
        except Exception:
            self.log.exception("jovial_guard: the pod of %s's failed spawn was not deleted", self.user.name)

    async def poll(self) -> Any:
        """KubeSpawner's poll; first, after a hub restart, the grants of running servers are taken
        back into account and the withdraw/renew round runs again."""
        if self.storage_grants:
            grants = self._grants()
            try:
                await asyncio.to_thread(grants.open)
                grants.start_background()
            except JovialGuardError as exc:
                self.log.warning("jovial_guard: storage grants not resumed yet: %s", exc)
        return await super().poll()

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            if self.storage_grants:
                try:
                    await self._grants().detach(user=self.user.name, reason="server stopped")
                except JovialGuardError as exc:  # never block a stop; the revocation list holds it
                    self.log.warning("jovial_guard: storage of %s not withdrawn: %s", self.user.name, exc)
                self.guard_storage = {}
