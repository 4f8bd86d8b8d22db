# OPA's own API authorization (system.authz), loaded by the sidecar with
# --authentication=token --authorization=basic.
#
# Only the webhook, holding the pod-local token, may ask for the decision and read the
# policy revision. Nobody may list, read, write or delete policies or data through the
# REST API (so a user pod that somehow reached the loopback listener, or a confused
# container in the pod, can neither read the settings nor rewrite the policy). Health is
# open (it reveals nothing). The token itself is never in OPA: only its SHA-256, from
# the file the init container writes (data.jovial_guard_authz.token_sha256).
package system.authz

default allow := false

allow if {
	input.path == ["health"]
	input.method == "GET"
}

allow if {
	webhook
	input.method == "POST"
	input.path == ["v1", "data", "jovial_guard", "main", "decision"]
}

allow if {
	webhook
	input.method == "GET"
	input.path == ["v1", "data", "jovial_guard_meta", "revision"]
}

webhook if {
	is_string(input.identity)
	expected := data.jovial_guard_authz.token_sha256
	is_string(expected)
	count(expected) == 64
	crypto.sha256(input.identity) == expected
}
