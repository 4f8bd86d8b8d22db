"""The Kubernetes enforcement point: an HTTPS AdmissionReview webhook that asks the same OPA
policy as the spawn hook, answers ``/mutate`` with a hardening JSON Patch and ``/validate``
with the final decision, and fails closed (deadline, OPA down, malformed review).

Also here: its TLS certificates and rotation, a per-revision decision cache, Prometheus
metrics, and the NetworkPolicies rendered from the policy's egress data.
"""
