# Identity that cannot be borrowed: who may create pods that speak as the hub.
#
# The hub's service account token, the hub's own component labels (they select the hub's
# and the proxy's Services), the labels and annotations that name a hub user, and the
# egress group labels (they select per-group NetworkPolicies) all carry authority. Only
# trusted creators may put them on a pod: the hub's service account, the Kubernetes
# controllers that copy a pod template (the template itself was decided when its owner was
# created), and the platform's installers. Egress labels are stricter still: they are
# rendered by the webhook from the groups the hub vouched for (spec.labels), so only the
# hub's service account and the controllers may carry them.
#
# On UPDATE only what the update introduces is judged: a label or service account the
# stored pod already had was decided when it was created.
package jovial_guard.identity

import data.jovial_guard.lib

settings := data.settings.hub

default from_hub := false

from_hub if lib.workload.request_user in lib.hub_service_accounts

default from_controller := false

from_controller if lib.workload.request_user in settings.trusted_creators.controllers

default from_installer := false

from_installer if lib.workload.request_user in settings.trusted_creators.users

from_installer if {
	some g in settings.trusted_creators.groups
	g in lib.request_groups
}

default trusted_creator := false

trusted_creator if from_hub

trusted_creator if from_controller

trusted_creator if from_installer

# Only pods that reach the API server are judged here; `jovial-guard check` and the spawn
# hook have no requester.
applies if lib.workload.origin == "admission"

old_metadata := object.get(lib.workload.extra, "old_metadata", {})

old_spec := object.get(lib.workload.extra, "old_spec", {})

# A label or annotation this request sets (CREATE: all; UPDATE: new or changed).
introduced_label(key) if {
	lib.workload.operation != "UPDATE"
	lib.labels[key]
}

introduced_label(key) if {
	lib.workload.operation == "UPDATE"
	value := lib.labels[key]
	object.get(object.get(old_metadata, "labels", {}), key, null) != value
}

introduced_annotation(key) if {
	lib.workload.operation != "UPDATE"
	lib.annotations[key]
}

introduced_annotation(key) if {
	lib.workload.operation == "UPDATE"
	value := lib.annotations[key]
	object.get(object.get(old_metadata, "annotations", {}), key, null) != value
}

service_account := sa if {
	sa := lib.spec.serviceAccountName
} else := sa if {
	sa := lib.spec.serviceAccount
} else := ""

old_service_account := sa if {
	sa := old_spec.serviceAccountName
} else := ""

violation contains {"rule": "identity/hub-service-account", "message": msg} if {
	applies
	not trusted_creator
	lib.workload.namespace == settings.namespace
	service_account == settings.service_account
	old_service_account != service_account
	msg := sprintf("The pod uses the hub's service account %q, which only the hub (%s) or the platform's installers may give a pod: its token speaks for every user. Use another service account.", [service_account, concat(", ", sort(lib.hub_service_accounts))])
}

violation contains {"rule": "identity/hub-labels", "message": msg} if {
	applies
	not trusted_creator
	some key, values in settings.protected_labels
	introduced_label(key)
	lib.labels[key] in values
	msg := sprintf("The label %s=%s is the hub's own (it selects the hub's Services or marks a user server); only the hub or the platform's installers may set it. Remove it.", [key, lib.labels[key]])
}

# z2jh's NetworkPolicies admit pods labelled hub.jupyter.org/network-access-* to the hub's
# and the proxy's APIs: those labels are the hub's to give.
violation contains {"rule": "identity/hub-labels", "message": msg} if {
	applies
	not trusted_creator
	some key, _ in lib.labels
	some prefix in object.get(settings, "protected_label_prefixes", [])
	startswith(key, prefix)
	introduced_label(key)
	msg := sprintf("The label %s opens the hub's or the proxy's API to the pod (z2jh's NetworkPolicies); only the hub or the platform's installers may set it. Remove it.", [key])
}

violation contains {"rule": "identity/hub-labels", "message": msg} if {
	applies
	not trusted_creator
	some key in settings.identity_annotations
	introduced_annotation(key)
	msg := sprintf("The annotation %s names a hub user; only the hub may set it. Remove it.", [key])
}

violation contains {"rule": "identity/hub-labels", "message": msg} if {
	applies
	not trusted_creator
	some key in settings.identity_annotations
	not key in object.keys(settings.protected_labels)
	introduced_label(key)
	msg := sprintf("The label %s names a hub user; only the hub may set it. Remove it.", [key])
}

violation contains {"rule": "identity/egress-labels", "message": msg} if {
	applies
	not from_hub
	not from_controller
	some key, _ in lib.labels
	startswith(key, settings.egress_label_prefix)
	introduced_label(key)
	msg := sprintf("The label %s selects a group's egress NetworkPolicy; egress labels are set by jovial-guard from the groups the hub vouches for, never by a pod's creator. Remove it.", [key])
}

# Egress labels on an UPDATE by the hub must be the ones its groups give.
violation contains {"rule": "identity/egress-labels", "message": msg} if {
	applies
	from_hub
	lib.workload.operation == "UPDATE"
	some key, value in lib.labels
	startswith(key, settings.egress_label_prefix)
	introduced_label(key)
	object.get(labels, key, null) != value
	msg := sprintf("The label %s=%s does not match the groups the hub vouches for. Egress labels are rendered by jovial-guard.", [key, value])
}

# The labels jovial-guard renders onto the pod: one per group of the (trusted) user that
# has an egress allowlist, with a name Kubernetes accepts as a label key suffix.
labels[key] := "allow" if {
	lib.is_notebook
	some g in lib.groups
	g != "*"
	object.get(data.settings.egress.groups, g, null) != null
	regex.match(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`, g)
	key := concat("", [settings.egress_label_prefix, g])
}
