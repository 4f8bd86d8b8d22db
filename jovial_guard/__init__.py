"""jovial_guard: sandboxing and policy enforcement for multi-user notebook clouds.

One policy source (Rego in ``policies/``, evaluated by a real OPA), two enforcement
points (the JupyterHub pre-spawn hook and the Kubernetes admission webhook) and one
hardening vocabulary (:class:`~jovial_guard.decision.SecuritySpec`).
"""

__version__ = "0.1.0"
