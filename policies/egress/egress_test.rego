package jovial_guard.egress_test

import data.jovial_guard.egress
import data.jovial_guard.testing as t

test_group_allowlist if {
	rules := egress.allow with input as t.one(t.compliant_container)
	count(rules) == 1
	rules[0].cidr == "10.213.250.0/24"
}

test_no_allowlist_without_group if {
	egress.allow == [] with input as t.with_groups(t.one(t.compliant_container), [])
}

test_metadata_always_blocked if {
	spec := egress.spec with input as t.one(t.compliant_container)
	"169.254.0.0/16" in spec.blocked
}

test_rules_from_several_groups_are_deduplicated_and_sorted if {
	rules := egress.allow with input as t.with_groups(t.one(t.compliant_container), ["astro", "b"])
		with data.settings.egress.groups as {
			"astro": [{"cidr": "10.9.0.0/16", "ports": [443]}],
			"b": [{"cidr": "10.1.0.0/16", "ports": [443]}, {"cidr": "10.9.0.0/16", "ports": [443]}],
		}
	[r.cidr | some r in rules] == ["10.1.0.0/16", "10.9.0.0/16"]
}
