package jovial_guard.identity_test

import data.jovial_guard.identity
import data.jovial_guard.main
import data.jovial_guard.testing as t

hub := "system:serviceaccount:jhub:hub"

spec_with_sa(sa) := {"containers": [t.compliant_container], "serviceAccountName": sa}

test_only_the_hub_may_use_the_hub_service_account if {
	"identity/hub-service-account" in t.rules(identity.violation) with input as t.admission({}, spec_with_sa("hub"), "mallory")
	count(identity.violation) == 0 with input as t.admission({}, spec_with_sa("hub"), hub)
	count(identity.violation) == 0 with input as t.admission({}, spec_with_sa("default"), "mallory")
}

test_controllers_and_installers_are_trusted_creators if {
	inp := t.admission({"labels": {"component": "hub"}}, spec_with_sa("hub"), "system:serviceaccount:kube-system:replicaset-controller")
	count(identity.violation) == 0 with input as inp
	installer := json.patch(t.admission({"labels": {"component": "hub"}}, spec_with_sa("hub"), "kubernetes-admin"), [{"op": "replace", "path": "/workload/request_groups", "value": ["system:masters"]}])
	count(identity.violation) == 0 with input as installer
}

test_hub_component_labels_cannot_be_borrowed if {
	inp := t.admission({"labels": {"component": "hub", "app": "jupyterhub"}}, {"containers": [t.compliant_container]}, "mallory")
	t.rules(identity.violation) == {"identity/hub-labels"} with input as inp
}

test_identity_annotations_only_from_the_hub if {
	meta := {"annotations": {"jovial-guard.io/groups": "[\"gpu-users\"]"}}
	t.rules(identity.violation) == {"identity/hub-labels"} with input as t.admission(meta, {"containers": [t.compliant_container]}, "mallory")
	username_label := {"labels": {"hub.jupyter.org/username": "alice"}}
	t.rules(identity.violation) == {"identity/hub-labels"} with input as t.admission(username_label, {"containers": [t.compliant_container]}, "mallory")
}

test_egress_labels_only_from_the_hub if {
	meta := {"labels": {"egress.jovial-guard.io/astro": "allow"}}
	t.rules(identity.violation) == {"identity/egress-labels"} with input as t.admission(meta, {"containers": [t.compliant_container]}, "mallory")
	installer := json.patch(t.admission(meta, {"containers": [t.compliant_container]}, "kubernetes-admin"), [{"op": "replace", "path": "/workload/request_groups", "value": ["system:masters"]}])
	t.rules(identity.violation) == {"identity/egress-labels"} with input as installer
	count(identity.violation) == 0 with input as t.admission(meta, {"containers": [t.compliant_container]}, hub)
}

test_update_judges_only_what_it_introduces if {
	meta := {"labels": {"component": "singleuser-server", "egress.jovial-guard.io/astro": "allow"}}
	inp := json.patch(t.admission(meta, {"containers": [t.compliant_container]}, "kubectl-user"), [
		{"op": "replace", "path": "/workload/operation", "value": "UPDATE"},
		{"op": "replace", "path": "/workload/extra", "value": {"old_metadata": meta, "old_spec": {}}},
	])
	count(identity.violation) == 0 with input as inp
	added := json.patch(inp, [{"op": "add", "path": "/workload/pod/metadata/labels/egress.jovial-guard.io~1staff", "value": "allow"}])
	t.rules(identity.violation) == {"identity/egress-labels"} with input as added
}

test_hub_updates_keep_egress_labels_to_the_rendered_set if {
	meta := {"labels": {"component": "singleuser-server"}}
	inp := json.patch(t.admission(meta, {"containers": [t.compliant_container]}, hub), [
		{"op": "replace", "path": "/workload/operation", "value": "UPDATE"},
		{"op": "replace", "path": "/workload/extra", "value": {"old_metadata": meta, "old_spec": {}}},
		{"op": "add", "path": "/workload/pod/metadata/labels/egress.jovial-guard.io~1staff", "value": "allow"},
	])
	t.rules(identity.violation) == {"identity/egress-labels"} with input as inp
}

test_egress_labels_are_rendered_from_trusted_groups if {
	inp := t.admission({"labels": {"component": "singleuser-server"}}, {"containers": [t.compliant_container]}, hub)
	d := main.decision with input as inp
	d.spec.labels.set == {"egress.jovial-guard.io/astro": "allow"}
	d.spec.labels.managed_prefix == "egress.jovial-guard.io/"

	# Anyone else's claimed groups give no egress labels.
	d2 := main.decision with input as t.admission({"labels": {"component": "platform"}}, {"containers": [t.compliant_container]}, "system:serviceaccount:kube-system:replicaset-controller")
	d2.spec.labels.set == {}
}

test_network_access_labels_cannot_be_borrowed if {
	inp := t.admission({"labels": {"hub.jupyter.org/network-access-proxy-api": "true"}}, {"containers": [t.compliant_container]}, "mallory")
	t.rules(identity.violation) == {"identity/hub-labels"} with input as inp
	count(identity.violation) == 0 with input as t.admission({"labels": {"hub.jupyter.org/network-access-hub": "true"}}, {"containers": [t.compliant_container]}, hub)
}
