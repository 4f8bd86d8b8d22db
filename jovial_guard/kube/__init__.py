"""The hub's side on Kubernetes: KubeSpawner that shows the policy's refusals and delivers
each notebook's storage grant to the node agent of the node its pod runs on.

:mod:`.spawner` is the spawner class z2jh's hub sets (``c.JupyterHub.spawner_class``);
:mod:`.grants` issues, seals, delivers and withdraws the grants with the same issuer as the
embedded mode (:class:`jovial_guard.credentials.hub.StorageCredentials`).
"""
