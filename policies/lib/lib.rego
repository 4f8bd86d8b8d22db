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

# A notebook pod: spawned by our hook, or made the way KubeSpawner makes user servers on
# zero-to-jupyterhub (the `component: singleuser-server` label, the
# `hub.jupyter.org/username` label or any other user claim, or KubeSpawner's pod name). Every other pod is a
# platform pod. Erring towards "notebook" is the safe side: notebooks get every platform
# rule and more.
default is_notebook := false

is_notebook if workload.origin == "spawn"

is_notebook if {
	some key, value in data.settings.hub.notebook_labels
	labels[key] == value
}

# A pod that claims a hub user or a profile (label or annotation) is a user's server.
is_notebook if {
	some value in object.filter(labels, data.settings.hub.identity_annotations)
	value != null
}

is_notebook if {
	some value in object.filter(annotations, data.settings.hub.identity_annotations)
	value != null
}

is_notebook if {
	workload.kind == "Pod"
	some prefix in data.settings.hub.notebook_name_prefixes
	startswith(object.get(metadata, "name", ""), prefix)
}

# The hub's service account(s), as request user names ("system:serviceaccount:NS:NAME").
hub_service_accounts := {sprintf("system:serviceaccount:%s:%s", [data.settings.hub.namespace, data.settings.hub.service_account])}

# Only the hub may speak for a user. Through admission, the user named in a pod's
# annotations is believed when the hub's own service account created the pod, or when a
# stored pod is updated without touching those annotations (they were decided when the
# pod was created, and only trusted creators may set them: see the identity package);
# anyone else gets their request identity and no groups.
default trusted_request := false

trusted_request if workload.origin != "admission"

trusted_request if workload.request_user in hub_service_accounts

trusted_request if stored_owner_kept

# An UPDATE of a stored Pod that keeps its owner: the identity annotations and labels are
# what they were.
default stored_owner_kept := false

stored_owner_kept if {
	workload.operation == "UPDATE"
	workload.kind == "Pod"
	old := workload.extra.old_metadata
	identity_claims(metadata) == identity_claims(old)
}

# The annotations and labels through which a pod claims a hub user.
identity_claims(meta) := {
	"annotations": {k: v |
		some k, v in object.get(meta, "annotations", {})
		k in data.settings.hub.identity_annotations
	},
	"labels": {k: v |
		some k, v in object.get(meta, "labels", {})
		k in data.settings.hub.identity_annotations
	},
}

user := u if {
	trusted_request
	u := workload.user
	is_object(u)
} else := {"name": request_user_name, "groups": [], "admin": false}

request_user_name := n if {
	n := workload.request_user
	is_string(n)
} else := ""

request_groups := {g | some g in object.get(workload, "request_groups", [])}

# "*" stands for everyone.
groups := {g | some g in object.get(user, "groups", [])} | {"*"}

origin := o if {
	o := workload.origin
	o in {"spawn", "admission", "check"}
} else := "check"
