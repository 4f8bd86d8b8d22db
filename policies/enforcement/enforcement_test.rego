package jovial_guard.enforcement_test

import data.jovial_guard.enforcement
import data.jovial_guard.main
import data.jovial_guard.testing as t

latest := t.patched(t.compliant_container, [{"op": "replace", "path": "/image", "value": "quay.io/jupyter/base-notebook:latest"}])

with_ns_labels(doc, labels) := json.patch(doc, [{"op": "add", "path": "/workload/namespace_labels", "value": labels}])

test_default_is_enforce if {
	enforcement.mode("images/latest") == "enforce" with enforcement.configured as {}
	d := main.decision with input as latest with enforcement.configured as {}
	not d.allowed
	d.mode == "enforce"
	d.reasons[0].rule == "images/latest"
	d.warned == []
	d.audited == []
}

test_clean_workload_has_mode_none if {
	d := main.decision with input as t.one(t.compliant_container) with enforcement.configured as {}
	d.allowed
	d.mode == "none"
}

test_warn_admits_with_a_warning if {
	d := main.decision with input as latest with enforcement.configured as {"images/latest": "warn"}
	d.allowed
	d.mode == "warn"
	d.reasons == []
	d.spec != null
	[v.rule | some v in d.warned] == ["images/latest"]
	some w in d.warnings
	startswith(w, "[images/latest] ")
}

test_audit_admits_and_records_without_warning if {
	d := main.decision with input as latest with enforcement.configured as {"images/*": "audit"}
	d.allowed
	d.mode == "audit"
	[v.rule | some v in d.audited] == ["images/latest"]
	every w in d.warnings {
		not startswith(w, "[images/")
	}
}

test_off_ignores if {
	d := main.decision with input as latest with enforcement.configured as {"images/latest": "off"}
	d.allowed
	d.mode == "none"
	d.audited == []
	d.warned == []
}

test_exact_rule_beats_package_wildcard if {
	modes := {"images/*": "off", "images/latest": "enforce"}
	d := main.decision with input as latest with enforcement.configured as modes
	not d.allowed
}

test_unknown_mode_counts_as_enforce if {
	d := main.decision with input as latest with enforcement.configured as {"images/latest": "maybe"}
	not d.allowed
	d2 := main.decision with input as latest with data.settings.enforcement.default as "lenient" with enforcement.configured as {}
	not d2.allowed
}

test_default_mode_from_data if {
	d := main.decision with input as latest with data.settings.enforcement.default as "audit" with enforcement.configured as {}
	d.allowed
	d.mode == "audit"
}

test_enforced_and_warned_together_deny_with_only_enforced_reasons if {
	both := t.patched(t.compliant_container, [{"op": "replace", "path": "/image", "value": "evil.example/notebook:latest"}])
	d := main.decision with input as both with enforcement.configured as {"images/latest": "warn"}
	not d.allowed
	d.mode == "enforce"
	{r.rule | some r in d.reasons} == {"images/not-allowed"}
	[v.rule | some v in d.warned] == ["images/latest"]
}

test_namespace_label_overrides_data if {
	# Whole namespace in warn: the :latest pod is admitted with a warning.
	d := main.decision with input as with_ns_labels(latest, {"jovial-guard.io/mode": "warn"}) with enforcement.configured as {}
	d.allowed
	d.mode == "warn"

	# The namespace is stricter than the data.
	d2 := main.decision with input as with_ns_labels(latest, {"jovial-guard.io/mode": "enforce"})
		with enforcement.configured as {"images/latest": "audit"}
	not d2.allowed
}

test_most_specific_namespace_label_wins if {
	labels := {
		"jovial-guard.io/mode": "enforce",
		"mode.jovial-guard.io/images": "audit",
		"mode.jovial-guard.io/images.latest": "warn",
	}
	enforcement.mode("images/latest") == "warn" with input as with_ns_labels(latest, labels) with enforcement.configured as {}
	enforcement.mode("images/not-allowed") == "audit" with input as with_ns_labels(latest, labels) with enforcement.configured as {}
	enforcement.mode("pod-security/privileged") == "enforce" with input as with_ns_labels(latest, labels) with enforcement.configured as {}
}

test_bad_namespace_label_value_enforces if {
	d := main.decision with input as with_ns_labels(latest, {"jovial-guard.io/mode": "please"})
		with enforcement.configured as {"images/latest": "off"}
	not d.allowed
}

test_locked_rules_ignore_namespace_labels if {
	inp := with_ns_labels(latest, {"jovial-guard.io/mode": "off"})
	enforcement.mode("identity/hub-labels") == "enforce" with input as inp with enforcement.configured as {}
	enforcement.mode("images/latest") == "off" with input as inp with enforcement.configured as {}
	enforcement.mode("images/latest") == "enforce" with input as inp with data.settings.enforcement.locked as ["images/latest"] with enforcement.configured as {}
}

test_malformed_namespace_labels_are_none if {
	inp := json.patch(latest, [{"op": "add", "path": "/workload/namespace_labels", "value": "warn"}])
	enforcement.namespace_labels == {} with input as inp with enforcement.configured as {}
	d := main.decision with input as inp with enforcement.configured as {}
	not d.allowed
}
