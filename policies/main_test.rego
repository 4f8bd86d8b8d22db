package jovial_guard.main_test

import data.jovial_guard.main
import data.jovial_guard.testing as t

test_compliant_notebook_allowed_with_spec if {
	d := main.decision with input as t.one(t.compliant_container)
	d.allowed
	d.reasons == []
	d.spec.read_only_root
	d.spec.uid == 1000
	d.spec.capabilities.drop == ["ALL"]
	d.spec.seccomp.type == "Localhost"
	d.spec.writable_paths == ["/tmp", "/home/jovyan"]
	d.spec.resources.memory_limit == "2Gi"
}

test_fixable_pod_allowed_with_warnings if {
	d := main.decision with input as t.one(t.notebook_container)
	d.allowed
	count(d.warnings) > 0
}

test_dangerous_pod_denied_with_reasons if {
	d := main.decision with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/privileged", "value": true}])
	not d.allowed
	d.spec == null
	some r in d.reasons
	r.rule == "pod-security/privileged"
}

test_revision_from_data if {
	d := main.decision with input as t.one(t.compliant_container) with data.jovial_guard_meta.revision as "sha256:abc"
	d.revision == "sha256:abc"
	d2 := main.decision with input as t.one(t.compliant_container)
	d2.revision == "unversioned"
}

test_explicit_ids_are_kept if {
	inp := t.workload({"containers": [t.compliant_container], "securityContext": {"runAsUser": 1234, "runAsGroup": 1234, "fsGroup": 1234}})
	d := main.decision with input as inp
	[d.spec.uid, d.spec.gid, d.spec.fs_group] == [1234, 1234, 1234]
}

test_added_net_bind_service_is_in_spec if {
	d := main.decision with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/capabilities/add", "value": ["NET_BIND_SERVICE"]}])
	d.spec.capabilities.add == ["NET_BIND_SERVICE"]
}

test_admission_trusts_user_only_from_the_hub if {
	meta := {"labels": {"component": "singleuser-server"}}
	spec := {"containers": [t.compliant_container]}

	# alice is in gpu-users; through the hub's service account the gpu profile is allowed.
	from_hub := t.with_profile(t.admission(meta, spec, "system:serviceaccount:jhub:hub"), "gpu")
	d := main.decision with input as from_hub
	d.allowed
	d.spec.seccomp == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"}
	d.spec.node_selector == {"jovial-guard.io/profiles-ready": "true"}

	# The same pod created by someone else: the claimed groups are ignored.
	forged := t.with_profile(t.admission(meta, spec, "mallory"), "gpu")
	d2 := main.decision with input as forged
	not d2.allowed
	some r in d2.reasons
	r.rule == "profiles/not-allowed"
}

test_non_notebook_pod_has_no_read_only_requirement if {
	d := main.decision with input as t.admission({"name": "x"}, {"containers": [t.notebook_container]}, "someone")
	d.allowed
	not d.spec.read_only_root
	d.spec.writable_paths == []
}

test_storage_spec_from_storage_package if {
	d := main.decision with input as t.one(t.compliant_container) with data.jovial_guard.storage.grant as {"fileset": "/users/alice", "mode": "rw", "mount_path": "/home/jovyan/lustre"}
	d.spec.storage.fileset == "/users/alice"
}

test_origin_falls_back_to_check if {
	inp := json.patch(t.one(t.compliant_container), [{"op": "replace", "path": "/workload/origin", "value": "nonsense"}])
	d := main.decision with input as inp
	d.spec.seccomp.localhostProfile == "jovial-guard/notebook.json"
	d.spec.node_selector == {"jovial-guard.io/profiles-ready": "true"}
}

test_spawned_notebook_needs_no_node_label if {
	d := main.decision with input as t.one(t.compliant_container)
	d.spec.seccomp == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook.json"}
	d.spec.node_selector == {}
}

test_platform_pod_keeps_runtime_default_and_any_node if {
	d := main.decision with input as t.admission({"labels": {"component": "hub"}}, {"containers": [t.compliant_container]}, "system:serviceaccount:kube-system:replicaset-controller")
	d.allowed
	d.scope == "platform"
	d.spec.seccomp == {"type": "RuntimeDefault"}
	d.spec.node_selector == {}
}

test_notebook_selector_follows_the_data if {
	meta := {"labels": {"component": "singleuser-server"}}
	inp := t.admission(meta, {"containers": [t.compliant_container]}, "system:serviceaccount:jhub:hub")
	d := main.decision with input as inp with data.settings.node.notebook_selector as {"example.org/seccomp": "v2"}
	d.spec.node_selector == {"example.org/seccomp": "v2"}
}

test_scope_notebook_by_z2jh_conventions if {
	base := t.admission({"labels": {"app": "jupyterhub"}}, {"containers": [t.compliant_container]}, "system:serviceaccount:jhub:hub")
	d := main.decision with input as base
	d.scope == "platform"
	every meta in [
		{"labels": {"component": "singleuser-server"}},
		{"labels": {"hub.jupyter.org/username": "alice"}},
		{"name": "jupyter-alice"},
	] {
		scope_of(json.patch(base, [{"op": "replace", "path": "/workload/pod/metadata", "value": meta}])) == "notebook"
	}
}

scope_of(inp) := d.scope if d := main.decision with input as inp

test_platform_pods_skip_notebook_only_rules if {
	writable := json.patch(t.compliant_container, [{"op": "replace", "path": "/securityContext/readOnlyRootFilesystem", "value": false}])
	inp := t.with_profile(t.admission({"labels": {"component": "proxy"}}, {"containers": [writable]}, "system:serviceaccount:kube-system:replicaset-controller"), "no-such-profile")
	d := main.decision with input as inp
	d.allowed
	d.spec.read_only_root == false
	d.spec.resources.cpu_limit == "2"
}

test_notebook_profile_selects_its_seccomp_profile if {
	d := main.decision with input as t.one(t.compliant_container) with data.settings.profiles.default.seccomp as "notebook-learned"
	d.allowed
	d.spec.seccomp == {"type": "Localhost", "localhostProfile": "jovial-guard/notebook-learned.json"}
	denied := main.decision with input as t.one(t.compliant_container) with data.settings.profiles.default.seccomp as "bogus"
	not denied.allowed
	denied.spec == null
	[r.rule | some r in denied.reasons] == ["profiles/seccomp-unknown"]
}

test_storage_spec_names_the_node_stage_only_through_admission_from_the_hub if {
	meta := {"labels": {"component": "singleuser-server"}}
	spec := {"containers": [t.compliant_container]}
	from_hub := t.admission(meta, spec, "system:serviceaccount:jhub:hub")
	d := main.decision with input as from_hub with data.settings.node.staging_root as "/var/lib/jgn/staging"
	d.spec.storage == {"fileset": "projects/astro", "mode": "ro", "mount_path": "/lustre/project", "node_stage": "/var/lib/jgn/staging/alice"}

	# Without the setting, or in the embedded engine, the grant has no node directory.
	d2 := main.decision with input as from_hub
	not d2.spec.storage.node_stage
	d3 := main.decision with input as t.one(t.compliant_container) with data.settings.node.staging_root as "/var/lib/jgn/staging"
	not d3.spec.storage.node_stage
}

test_host_users_is_false_for_kubernetes_notebooks_only_where_nodes_support_it if {
	notebook := t.admission({"labels": {"component": "singleuser-server"}}, {"containers": [t.compliant_container]}, "system:serviceaccount:jhub:hub")
	d_off := main.decision with input as notebook
	d_off.spec.host_users == null
	d_on := main.decision with input as notebook with data.settings.node.user_namespaces as true
	d_on.spec.host_users == false

	# Scheduled only where the node agent labelled the node as supporting it, beside the
	# profile's label; with the switch off nothing is added.
	d_on.spec.node_selector == {"jovial-guard.io/profiles-ready": "true", "jovial-guard.io/user-namespaces": "true"}
	d_off.spec.node_selector == {"jovial-guard.io/profiles-ready": "true"}

	# The embedded engine maps ids itself; platform pods are not changed.
	spawned := main.decision with input as t.one(t.compliant_container) with data.settings.node.user_namespaces as true
	spawned.spec.host_users == null
	platform := main.decision with input as t.admission({"name": "x"}, {"containers": [t.notebook_container]}, "someone") with data.settings.node.user_namespaces as true
	platform.spec.host_users == null
}
