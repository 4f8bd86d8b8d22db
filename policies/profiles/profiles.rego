# Notebook profiles: which sizes exist and which groups may use them (all in data).
package jovial_guard.profiles

import data.jovial_guard.lib

requested := p if {
	p := lib.workload.profile
	is_string(p)
	p != ""
} else := "default"

profile := data.settings.profiles[requested]

violation contains {"rule": "profiles/unknown", "message": msg} if {
	not data.settings.profiles[requested]
	msg := sprintf("There is no notebook profile %q. Available profiles: %s.", [requested, concat(", ", sort(object.keys(data.settings.profiles)))])
}

violation contains {"rule": "profiles/not-allowed", "message": msg} if {
	profile
	not permitted(profile)
	msg := sprintf("The %q profile is available to members of %s; you are in %s. Choose another profile or ask the admins to add you to one of those groups.", [requested, concat(", ", sort(profile.groups)), member_of])
}

permitted(p) if {
	some g in p.groups
	g in lib.groups
}

member_of := "no groups" if {
	count(lib.groups) == 1
} else := concat(", ", sort([g | some g in lib.groups; g != "*"]))
