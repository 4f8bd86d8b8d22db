"""Known-good and known-bad workloads every deployed policy must decide correctly.

A deploy's health probe: if the compliant notebook is denied (a class would be locked
out) or the privileged pod is allowed (the policy is open), the deploy is rolled back.
"""

from __future__ import annotations

from ..workload import HubUser, Workload

_IMAGE = "localhost/jovial-guard/notebook:v1"

KNOWN_GOOD = Workload(
    origin="spawn",
    kind="Pod",
    name="jovial-guard-probe-good",
    namespace="probe",
    user=HubUser(name="probe-student", groups=()),
    pod={"metadata": {"labels": {"component": "singleuser-server"}},
         "spec": {"containers": [{"name": "notebook", "image": _IMAGE,
                                  "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}]}},
)

KNOWN_BAD = Workload(
    origin="spawn",
    kind="Pod",
    name="jovial-guard-probe-bad",
    namespace="probe",
    user=HubUser(name="probe-student", groups=()),
    pod={"metadata": {"labels": {"component": "singleuser-server"}},
         "spec": {"hostPID": True, "containers": [{"name": "notebook", "image": _IMAGE,
                                                   "securityContext": {"privileged": True, "runAsUser": 0}}]}},
)
