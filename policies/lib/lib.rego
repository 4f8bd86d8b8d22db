# Shared views of input.workload for every policy package.
#
# Every package reads the workload through these rules, so the shape of the input is
# known in one place. input.workload is built by jovial_guard.workload.Workload.to_input().
package jovial_guard.lib

workload := input.workload

pod := object.get(workload, "pod", {})

spec := object.get(pod, "spec", {})

metadata := object.get(pod, "metadata", {})

annotations := object.get(metadata, "annotations", {})

labels := object.get(metadata, "labels", {})

pod_security_context := object.get(spec, "securityContext", {})

# Every container of every kind. Ephemeral containers are decided like the others:
# `kubectl debug` must not be a way around the policy.
container_kinds := ["containers", "initContainers", "ephemeralContainers"]

containers contains {"kind": kind, "index": i, "name": object.get(c, "name", ""), "container": c} if {
	some kind in container_kinds
	some i, c in object.get(spec, kind, [])
}

security_context(c) := object.get(c.container, "securityContext", {})

# A notebook pod: spawned by our hook, or labelled the way KubeSpawner labels user servers.
default is_notebook := false

is_notebook if workload.origin == "spawn"

is_notebook if {
	some key, value in data.settings.hub.notebook_labels
	labels[key] == value
}

# Only the hub may speak for a user. Through admission, the user named in a pod's
# annotations is believed only when the hub's own service account created the pod;
# anyone else gets their request identity and no groups.
default trusted_request := false

trusted_request if workload.origin != "admission"

trusted_request if workload.request_user in data.settings.hub.service_accounts

user := u if {
	trusted_request
	u := workload.user
	is_object(u)
} else := {"name": request_user_name, "groups": [], "admin": false}

request_user_name := n if {
	n := workload.request_user
	is_string(n)
} else := ""

# "*" stands for everyone.
groups := {g | some g in object.get(user, "groups", [])} | {"*"}

origin := o if {
	o := workload.origin
	o in {"spawn", "admission", "check"}
} else := "check"
