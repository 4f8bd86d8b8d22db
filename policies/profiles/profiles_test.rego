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
