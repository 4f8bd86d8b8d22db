# Builders for test inputs, shared by every package's _test.rego.
package jovial_guard.testing

notebook_container := {"name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-05-27"}

compliant_container := {
	"name": "notebook",
	"image": "quay.io/jupyter/base-notebook:2024-05-27",
	"resources": {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "100m", "memory": "512Mi"}},
	"securityContext": {
		"allowPrivilegeEscalation": false,
		"capabilities": {"drop": ["ALL"]},
		"readOnlyRootFilesystem": true,
		"runAsNonRoot": true,
		"runAsUser": 1000,
		"seccompProfile": {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"},
	},
}

# A workload input around a pod spec, spawned by the hub for alice (group astro).
workload(spec) := {"workload": {
	"origin": "spawn",
	"kind": "Pod",
	"name": "jupyter-alice",
	"namespace": "jhub",
	"operation": "CREATE",
	"user": {"name": "alice", "groups": ["astro"], "admin": false},
	"profile": null,
	"request_user": null,
	"request_groups": [],
	"pod": {"metadata": {"labels": {"component": "singleuser-server"}}, "spec": spec},
	"extra": {},
}}

# The same, through admission, with metadata and requester given.
admission(metadata, spec, requester) := {"workload": {
	"origin": "admission",
	"kind": "Pod",
	"name": "p",
	"namespace": "jhub",
	"operation": "CREATE",
	"user": {"name": "alice", "groups": ["astro", "gpu-users"], "admin": false},
	"profile": null,
	"request_user": requester,
	"request_groups": [],
	"pod": {"metadata": metadata, "spec": spec},
	"extra": {},
}}

with_profile(input_doc, profile) := json.patch(input_doc, [{"op": "add", "path": "/workload/profile", "value": profile}])

with_groups(input_doc, groups) := json.patch(input_doc, [{"op": "replace", "path": "/workload/user/groups", "value": groups}])

one(container) := workload({"containers": [container]})

patched(container, patch) := one(json.patch(container, patch))

rules(violations) := {v.rule | some v in violations}
