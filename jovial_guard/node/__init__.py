"""The node agent: one program per Kubernetes node that prepares the node for notebooks.

It installs the project's seccomp profiles into the kubelet's profile directory and labels
the node once they are in place (:mod:`.profiles`, :mod:`.labels`, :mod:`.agent`); the
webhook makes every notebook pod select that label, so no notebook is scheduled onto a node
without its profile. It also labels the node by its user-namespace support (:mod:`.userns`)
and, after each good pass, leaves the status its readiness probe checks (:mod:`.readiness`).
It never imports JupyterHub.
"""
