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

# The seccomp profile a notebook of the requested profile runs under: the profile's own
# `seccomp` name (a file in profiles/seccomp, installed on every node), else the platform
# default. A name that is not installed is refused: a misconfiguration never falls back to
# a weaker profile, and the container would not start without its profile anyway.
seccomp_name := n if {
	n := profile.seccomp
} else := object.get(data.settings.seccomp, "notebook_default", "")

installed_seccomp := object.get(data.settings.seccomp, "localhost_profiles", [])

seccomp := {"type": "Localhost", "localhostProfile": sprintf("jovial-guard/%v.json", [seccomp_name])}

violation contains {"rule": "profiles/seccomp-unknown", "message": msg} if {
	not seccomp_name in installed_seccomp
	msg := sprintf("The %q profile names seccomp profile %v, which is not installed (installed: %s). This is a platform misconfiguration: tell the admins.", [requested, json.marshal(seccomp_name), concat(", ", sort(installed_seccomp))])
}
