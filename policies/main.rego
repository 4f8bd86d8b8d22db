# The decision: combines every concern into one answer with reasons and a SecuritySpec.
#
# Entry point for both enforcement points: data.jovial_guard.main.decision.
# Every violation left after exemptions acts in its rule's enforcement mode (see the
# enforcement package): only enforce-mode violations deny; warn-mode ones are admitted and
# also listed as warnings; audit-mode ones are admitted and listed for the record.
# Allowed only when no violation is enforced; an allowed decision always carries a
# complete spec (if the spec cannot be built the decision is undefined, and the Python
# side fails closed).
package jovial_guard.main

import data.jovial_guard.egress
import data.jovial_guard.enforcement
import data.jovial_guard.exemptions
import data.jovial_guard.identity
import data.jovial_guard.images
import data.jovial_guard.lib
import data.jovial_guard.pod_security
import data.jovial_guard.profiles
import data.jovial_guard.resources

# Notebooks get every rule; platform pods (z2jh's hub, proxy, schedulers, pullers, and
# anything else in a guarded namespace) get Pod Security, images, accelerators and
# identity, but not the notebook-only rules (profiles, per-group CPU/memory, read-only root).
notebook_violations := profiles.violation if lib.is_notebook

else := set()

# A metadata-only UPDATE of a stored pod (labels, annotations) is not re-decided, like
# Pod Security: only the identity-bearing metadata it introduces is judged.
default metadata_only := false

metadata_only if lib.workload.extra.metadata_only == true

checked := identity.violation if metadata_only

else := (((pod_security.violation | images.violation) | resources.violation) | notebook_violations) | identity.violation

violations := exemptions.remaining(checked)

# Each violation's mode, worked out once for all of the rules below.
moded := enforcement.moded(violations)

enforced := enforcement.acting_moded(moded, "enforce")

warned := enforcement.acting_moded(moded, "warn")

audited := enforcement.acting_moded(moded, "audit")

mode := enforcement.strictest_moded(moded)

exempted := sort([e | some e in exemptions.used(checked)])

omissions := set() if metadata_only

else := pod_security.omission | resources.omission

warnings := omissions | {sprintf("[%s] %s", [v.rule, v.message]) | some v in warned}

revision := r if {
	r := data.jovial_guard_meta.revision
} else := "unversioned"

decision := {
	"allowed": true,
	"reasons": [],
	"warnings": sort(warnings),
	"exemptions": exempted,
	"scope": scope,
	"spec": spec,
	"revision": revision,
	"mode": mode,
	"warned": sort([v | some v in warned]),
	"audited": sort([v | some v in audited]),
} if {
	count(enforced) == 0
}

decision := {
	"allowed": false,
	"reasons": sort([v | some v in enforced]),
	"warnings": sort(warnings),
	"exemptions": exempted,
	"scope": scope,
	"spec": null,
	"revision": revision,
	"mode": mode,
	"warned": sort([v | some v in warned]),
	"audited": sort([v | some v in audited]),
} if {
	count(enforced) > 0
}

# The uid/gid the workload runs as: what the pod already asks for (non-root is enforced
# above), else the platform default.
uid := u if {
	u := lib.pod_security_context.runAsUser
	is_number(u)
	u > 0
} else := data.settings.defaults.uid

gid := g if {
	g := lib.pod_security_context.runAsGroup
	is_number(g)
	g > 0
} else := data.settings.defaults.gid

fs_group := g if {
	g := lib.pod_security_context.fsGroup
	is_number(g)
	g > 0
} else := data.settings.defaults.fs_group

added_capabilities := sort({cap |
	some c in lib.containers
	some cap in object.get(object.get(lib.security_context(c), "capabilities", {}), "add", [])
})

writable_paths := data.settings.defaults.writable_paths if lib.is_notebook

else := []

scope := "notebook" if lib.is_notebook

else := "platform"

# Resources a platform pod without limits is given; a notebook's come from its profile.
sizing := profiles.profile if lib.is_notebook

else := data.settings.platform.resources

spec := {
	"profile": profiles.requested,
	"notebook": lib.is_notebook,
	"uid": uid,
	"gid": gid,
	"fs_group": fs_group,
	"read_only_root": lib.is_notebook,
	"writable_paths": writable_paths,
	"capabilities": {"drop": ["ALL"], "add": added_capabilities},
	"no_new_privileges": true,
	"seccomp": seccomp,
	"node_selector": node_selector,
	"host_users": host_users,
	"apparmor": data.settings.apparmor[lib.origin],
	"resources": {
		"cpu_limit": sizing.cpu_limit,
		"memory_limit": sizing.memory_limit,
		"cpu_request": sizing.cpu_request,
		"memory_request": sizing.memory_request,
		"gpu": sizing.gpu,
		"pids_limit": data.settings.defaults.pids_limit,
	},
	"egress": egress.spec,
	"storage": storage,
	"labels": {"managed_prefix": data.settings.hub.egress_label_prefix, "set": identity.labels},
}

# Notebooks run under the seccomp profile their notebook profile names (the node agent
# installs every profile; the embedded engine reads the same files); platform pods use the
# per-origin setting.
seccomp := profiles.seccomp if lib.is_notebook

else := data.settings.seccomp[lib.origin]

# A notebook pod that runs under a Localhost profile may only be scheduled onto a node
# whose agent has installed that profile and labelled the node; one given its own user
# namespace only onto a node whose agent found user-namespace support.
node_selector := object.union(profile_selector, userns_selector)

profile_selector := data.settings.node.notebook_selector if {
	seccomp.type == "Localhost"
	lib.origin != "spawn"
} else := {}

userns_selector := object.get(data.settings.node, "user_namespaces_selector", {}) if {
	host_users == false
} else := {}

# Notebook pods get a user namespace of their own (hostUsers: false) where the admins state
# that the nodes support it (settings.node.user_namespaces); otherwise the pod's own choice.
host_users := false if {
	lib.is_notebook
	lib.origin != "spawn"
	data.settings.node.user_namespaces == true
} else := null

# The grant; through admission with the node's staging directory the pod mounts read-only
# (the node agent mounts the fileset under it, and the mount propagates into the pod).
storage := object.union(g, {"node_stage": s}) if {
	g := data.jovial_guard.storage.grant
	s := data.jovial_guard.storage.node_stage
} else := g if {
	g := data.jovial_guard.storage.grant
} else := null
