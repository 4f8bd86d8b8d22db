package jovial_guard.exemptions_test

import data.jovial_guard.main
import data.jovial_guard.testing as t

# A platform pod with a vendor's image the allowlist does not name.
vendor_platform_pod := t.admission(
	{"labels": {"app": "node-tools"}},
	{"containers": [json.patch(t.compliant_container, [{"op": "replace", "path": "/image", "value": "ghcr.io/vendor/node-tools:4.0.0"}])]},
	"system:serviceaccount:kube-system:daemon-set-controller",
)

exemption := {
	"id": "node-tools",
	"reason": "the vendor's monitoring agent, reviewed",
	"rules": ["images/not-allowed"],
	"namespaces": ["jhub"],
	"selector": {"app": "node-tools"},
	"images": ["ghcr.io/vendor/node-tools"],
	"request_users": ["system:serviceaccount:kube-system:daemon-set-controller"],
}

test_without_exemption_denied if {
	d := main.decision with input as vendor_platform_pod
	not d.allowed
	d.exemptions == []
}

test_exemption_lifts_only_its_rule_and_is_reported if {
	d := main.decision with input as vendor_platform_pod with data.settings.exemptions as [exemption]
	d.allowed
	d.exemptions == [{"id": "node-tools", "rule": "images/not-allowed", "reason": "the vendor's monitoring agent, reviewed", "expires": null}]
	d.scope == "platform"
}

test_scope_mismatch_denies if {
	patches := [
		[{"op": "replace", "path": "/namespaces", "value": ["other"]}],
		[{"op": "replace", "path": "/selector", "value": {"app": "else"}}],
		[{"op": "replace", "path": "/images", "value": ["ghcr.io/vendor/node"]}],
		[{"op": "replace", "path": "/request_users", "value": ["mallory"]}],
		[{"op": "replace", "path": "/rules", "value": ["images/latest"]}],
		[{"op": "remove", "path": "/reason"}],
	]
	every patch in patches {
		not allowed_with(json.patch(exemption, patch))
	}
}

allowed_with(e) if {
	d := main.decision with input as vendor_platform_pod with data.settings.exemptions as [e]
	d.allowed
}

test_package_wildcard if {
	allowed_with(json.patch(exemption, [{"op": "replace", "path": "/rules", "value": ["images/*"]}]))
}

test_expiry if {
	future := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "2030-01-01T00:00:00Z"}])
	past := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "2020-01-01T00:00:00Z"}])
	malformed := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "next tuesday"}])
	allowed_with(future) with time.now_ns as 1767225600000000000
	not allowed_with(past) with time.now_ns as 1767225600000000000
	not allowed_with(malformed)
}
