package jovial_guard.storage_test

import data.jovial_guard.storage

settings := {
	"mount_root": "/lustre",
	"default": {"fileset_prefix": "home", "mode": "rw", "mount_name": "home"},
	"group_order": ["staff", "astro"],
	"groups": {
		"astro": {"fileset": "projects/astro", "mode": "ro", "mount_name": "project"},
		"staff": {"fileset": "projects/staff", "mode": "rw"},
		"broken": {"fileset": "../etc", "mode": "rw"},
	},
	"users": {
		"carol": {"fileset": "projects/special", "mode": "ro", "mount_name": "special"},
		"mallory": {"fileset": "/etc/../shadow", "mode": "rw"},
		"eve": {"fileset": "home/eve", "mode": "admin"},
	},
}

hub := {"namespace": "jhub", "service_account": "hub", "notebook_labels": {}, "notebook_name_prefixes": [], "identity_annotations": []}

spawn(user) := {"workload": {"origin": "spawn", "user": user, "pod": {}}}

test_default_user_gets_own_home if {
	g := storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	g == {"fileset": "home/alice", "mode": "rw", "mount_path": "/lustre/home"}
}

test_group_entry_wins_over_default if {
	g := storage.grant with input as spawn({"name": "bob", "groups": ["astro"], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	g == {"fileset": "projects/astro", "mode": "ro", "mount_path": "/lustre/project"}
}

test_group_order_decides_between_groups if {
	g := storage.grant with input as spawn({"name": "dave", "groups": ["astro", "staff"], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	g.fileset == "projects/staff"
	g.mode == "rw"
	g.mount_path == "/lustre/data" # no mount_name: the default leaf
}

test_user_entry_wins_over_group if {
	g := storage.grant with input as spawn({"name": "carol", "groups": ["staff"], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	g == {"fileset": "projects/special", "mode": "ro", "mount_path": "/lustre/special"}
	r := storage.reason with input as spawn({"name": "carol", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	r == "granted from the user setting"
}

test_group_not_in_order_is_ignored if {
	g := storage.grant with input as spawn({"name": "frank", "groups": ["broken"], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	g.fileset == "home/frank"
}

test_unsafe_user_name_gets_nothing if {
	not storage.grant with input as spawn({"name": "../root", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	not storage.grant with input as spawn({"name": "Alice", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	r := storage.reason with input as spawn({"name": "a/b", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	contains(r, "not a safe path component")
}

test_no_user_gets_nothing if {
	not storage.grant with input as spawn(null) with data.settings as {"storage": settings, "hub": hub}
}

test_unsafe_fileset_in_settings_gets_nothing if {
	not storage.grant with input as spawn({"name": "mallory", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	r := storage.reason with input as spawn({"name": "mallory", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
	contains(r, "unsafe fileset or mode")
}

test_unknown_mode_gets_nothing if {
	not storage.grant with input as spawn({"name": "eve", "groups": [], "admin": false})
		with data.settings as {"storage": settings, "hub": hub}
}

test_broken_group_listed_first_fails_closed if {
	s := object.union(settings, {"group_order": ["broken", "astro"]})
	not storage.grant with input as spawn({"name": "gina", "groups": ["broken", "astro"], "admin": false})
		with data.settings as {"storage": s, "hub": hub}
}

test_no_settings_no_grant if {
	not storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": {}, "hub": hub}
	r := storage.reason with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": {}, "hub": hub}
	r == "no storage setting matches this user"
}

test_unsafe_mount_root_gets_nothing if {
	s := object.union(settings, {"mount_root": "relative/path"})
	not storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": s, "hub": hub}
	s2 := object.union(settings, {"mount_root": "/lustre/../etc"})
	not storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": s2, "hub": hub}
}

test_unsafe_mount_name_falls_back_to_data if {
	s := object.union(settings, {"default": {"fileset_prefix": "home", "mode": "rw", "mount_name": "../x"}})
	g := storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
		with data.settings as {"storage": s, "hub": hub}
	g.mount_path == "/lustre/data"
}

# Through admission, only the hub's service account may name the user: anyone else is
# decided as their request identity, which is not a safe name here, so no storage.
test_admission_untrusted_user_annotation_ignored if {
	inp := {"workload": {
		"origin": "admission",
		"user": {"name": "alice", "groups": ["staff"], "admin": false},
		"request_user": "system:serviceaccount:default:intruder",
		"pod": {},
	}}
	not storage.grant with input as inp with data.settings as {"storage": settings, "hub": hub}
}

test_admission_from_hub_trusted if {
	inp := {"workload": {
		"origin": "admission",
		"user": {"name": "alice", "groups": [], "admin": false},
		"request_user": "system:serviceaccount:jhub:hub",
		"pod": {},
	}}
	g := storage.grant with input as inp with data.settings as {"storage": settings, "hub": hub}
	g.fileset == "home/alice"
}

test_repository_settings_give_home if {
	g := storage.grant with input as spawn({"name": "alice", "groups": [], "admin": false})
	g.mode in {"ro", "rw"}
	startswith(g.fileset, "home/")
}
