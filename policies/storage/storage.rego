# Storage grants: which part of the shared Lustre file system a user's notebook reaches.
#
# Entry point: data.jovial_guard.storage.grant = {"fileset", "mode", "mount_path"} for the
# (trusted) user of the workload; undefined when the user gets no storage (no user, a name
# that is not a safe path component, or no matching setting). Undefined means "no grant":
# jovial_guard.credentials never issues storage that policy did not name.
#
# Settings (data.settings.storage):
#   mount_root   where filesets appear in the container ("/lustre")
#   users        {name: {"fileset", "mode", "mount_name"}}   explicit per-user entries
#   groups       {group: {...}} with group_order saying which group wins when several match
#   default      {"fileset_prefix", "mode", "mount_name"}: the user's own fileset
#                (fileset_prefix + "/" + user name)
package jovial_guard.storage

import data.jovial_guard.lib

settings := object.get(data.settings, "storage", {})

# A user name or fileset component we are willing to turn into a path.
safe_name(s) if {
	is_string(s)
	regex.match(`^[a-z0-9][a-z0-9._-]{0,63}$`, s)
	not contains(s, "..")
}

# A fileset: relative, slash-separated safe components, no "..", no leading "/".
safe_fileset(f) if {
	is_string(f)
	parts := split(f, "/")
	count(parts) > 0
	every p in parts {
		safe_name(p)
	}
}

valid_mode(m) if m in {"ro", "rw"}

user_name := n if {
	n := lib.user.name
	safe_name(n)
}

# The setting that applies: an explicit user entry, else the first listed group the user is
# in, else the default per-user fileset.
chosen := {"source": "user", "entry": e, "fileset": e.fileset} if {
	e := settings.users[user_name]
} else := {"source": "group", "entry": e, "fileset": e.fileset} if {
	g := first_group
	e := settings.groups[g]
} else := {"source": "default", "entry": e, "fileset": concat("/", [e.fileset_prefix, user_name])} if {
	e := settings["default"]
	is_string(e.fileset_prefix)
}

matching_groups := [g |
	some g in object.get(settings, "group_order", [])
	g in lib.groups
	settings.groups[g]
]

first_group := matching_groups[0]

mount_root := r if {
	r := settings.mount_root
	regex.match(`^(/[a-z0-9][a-z0-9._-]{0,63})+$`, r)
}

mount_name := n if {
	n := chosen.entry.mount_name
	safe_name(n)
} else := "data"

grant := {
	"fileset": chosen.fileset,
	"mode": chosen.entry.mode,
	"mount_path": concat("/", [mount_root, mount_name]),
} if {
	safe_fileset(chosen.fileset)
	valid_mode(chosen.entry.mode)
}

# Why a user got no grant (for `jovial-guard check` and the docs); never a violation: a
# notebook without storage is still a notebook.
reason := "no user, or a user name that is not a safe path component" if {
	not user_name
} else := "no storage setting matches this user" if {
	not chosen
} else := sprintf("storage setting for %q (%s) names an unsafe fileset or mode", [user_name, chosen.source]) if {
	not grant
} else := sprintf("granted from the %s setting", [chosen.source])

# Where the node agent stages this user's filesets on a Kubernetes node
# (settings.node.staging_root + "/" + user): the one host path a notebook pod may mount. Defined
# only for a notebook whose user the hub vouched for (a trusted request) and who has a grant,
# so a pod cannot reach another user's directory by naming it, claiming its labels or being
# created by anyone but the hub.
node_stage := concat("/", [root, user_name]) if {
	lib.origin == "admission"
	lib.is_notebook
	lib.trusted_request
	grant
	root := data.settings.node.staging_root
	regex.match(`^(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})+$`, root)
	not contains(root, "..")
}
