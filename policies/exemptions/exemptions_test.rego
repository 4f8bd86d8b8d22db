package jovial_guard.exemptions_test

import data.jovial_guard.main
import data.jovial_guard.testing as t

privileged_platform_pod := t.admission(
	{"labels": {"app": "node-tools"}},
	{"containers": [json.patch(t.compliant_container, [
		{"op": "add", "path": "/securityContext/privileged", "value": true},
		{"op": "replace", "path": "/image", "value": "quay.io/jupyterhub/k8s-network-tools:4.0.0"},
	])]},
	"system:serviceaccount:kube-system:daemon-set-controller",
)

exemption := {
	"id": "network-tools",
	"reason": "the metadata blocker needs iptables",
	"rules": ["pod-security/privileged"],
	"namespaces": ["jhub"],
	"selector": {"app": "node-tools"},
	"images": ["quay.io/jupyterhub/k8s-network-tools"],
	"request_users": ["system:serviceaccount:kube-system:daemon-set-controller"],
}

test_without_exemption_denied if {
	d := main.decision with input as privileged_platform_pod
	not d.allowed
	d.exemptions == []
}

test_exemption_lifts_only_its_rule_and_is_reported if {
	d := main.decision with input as privileged_platform_pod with data.settings.exemptions as [exemption]
	d.allowed
	d.exemptions == [{"id": "network-tools", "rule": "pod-security/privileged", "reason": "the metadata blocker needs iptables", "expires": null}]
	d.scope == "platform"
}

test_scope_mismatch_denies if {
	patches := [
		[{"op": "replace", "path": "/namespaces", "value": ["other"]}],
		[{"op": "replace", "path": "/selector", "value": {"app": "else"}}],
		[{"op": "replace", "path": "/images", "value": ["quay.io/jupyterhub/k8s-network"]}],
		[{"op": "replace", "path": "/request_users", "value": ["mallory"]}],
		[{"op": "replace", "path": "/rules", "value": ["pod-security/host-path"]}],
		[{"op": "remove", "path": "/reason"}],
	]
	every patch in patches {
		not allowed_with(json.patch(exemption, patch))
	}
}

allowed_with(e) if {
	d := main.decision with input as privileged_platform_pod with data.settings.exemptions as [e]
	d.allowed
}

test_package_wildcard if {
	allowed_with(json.patch(exemption, [{"op": "replace", "path": "/rules", "value": ["pod-security/*"]}]))
}

test_expiry if {
	future := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "2030-01-01T00:00:00Z"}])
	past := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "2020-01-01T00:00:00Z"}])
	malformed := json.patch(exemption, [{"op": "add", "path": "/expires", "value": "next tuesday"}])
	allowed_with(future) with time.now_ns as 1767225600000000000
	not allowed_with(past) with time.now_ns as 1767225600000000000
	not allowed_with(malformed)
}
