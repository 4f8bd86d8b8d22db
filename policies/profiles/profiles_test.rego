package jovial_guard.profiles_test

import data.jovial_guard.profiles
import data.jovial_guard.testing as t

test_default_profile_for_everyone if {
	profiles.requested == "default" with input as t.one(t.compliant_container)
	count(profiles.violation) == 0 with input as t.with_groups(t.one(t.compliant_container), [])
}

test_unknown_profile_denied if {
	t.rules(profiles.violation) == {"profiles/unknown"} with input as t.with_profile(t.one(t.compliant_container), "huge")
}

test_group_gated_profile if {
	inp := t.with_profile(t.one(t.compliant_container), "large-memory")
	t.rules(profiles.violation) == {"profiles/not-allowed"} with input as inp
	count(profiles.violation) == 0 with input as t.with_groups(inp, ["large-memory"])
	count(profiles.violation) == 0 with input as t.with_groups(inp, ["staff"])
}

test_denial_names_groups if {
	inp := t.with_groups(t.with_profile(t.one(t.compliant_container), "gpu"), [])
	some v in profiles.violation with input as inp
	contains(v.message, "gpu-users")
	contains(v.message, "no groups")
}

test_seccomp_defaults_to_the_notebook_profile if {
	profiles.seccomp == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"} with input as t.one(t.compliant_container)
}

test_seccomp_chosen_per_profile if {
	inp := t.with_groups(t.with_profile(t.one(t.compliant_container), "large-memory"), ["staff"])
	p := profiles.seccomp with input as inp with data.settings.profiles["large-memory"].seccomp as "notebook-learned"
	p == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook-learned.json"}
	profiles.seccomp.localhostProfile == "jovial-guard/notebook.json" with input as t.one(t.compliant_container) with data.settings.profiles["large-memory"].seccomp as "notebook-learned"
	count(profiles.violation) == 0 with input as inp with data.settings.profiles["large-memory"].seccomp as "notebook-learned"
}

test_unknown_seccomp_profile_is_a_clear_denial if {
	inp := t.one(t.compliant_container)
	t.rules(profiles.violation) == {"profiles/seccomp-unknown"} with input as inp with data.settings.profiles.default.seccomp as "unconfined"
	some v in profiles.violation with input as inp with data.settings.profiles.default.seccomp as "unconfined"
	contains(v.message, `"unconfined"`)
	contains(v.message, "notebook, notebook-learned")
	t.rules(profiles.violation) == {"profiles/seccomp-unknown"} with input as inp with data.settings.profiles.default.seccomp as {"type": "Unconfined"}
	t.rules(profiles.violation) == {"profiles/seccomp-unknown"} with input as inp with data.settings.seccomp.notebook_default as "missing"
	t.rules(profiles.violation) == {"profiles/seccomp-unknown"} with input as inp with data.settings.seccomp.localhost_profiles as []
}
