package jovial_guard.pod_security_test

import data.jovial_guard.pod_security
import data.jovial_guard.testing as t

test_compliant_container_has_no_violation_or_omission if {
	count(pod_security.violation) == 0 with input as t.one(t.compliant_container)
	count(pod_security.omission) == 0 with input as t.one(t.compliant_container)
}

test_missing_fields_are_omissions_not_violations if {
	count(pod_security.violation) == 0 with input as t.one(t.notebook_container)
	count(pod_security.omission) == 6 with input as t.one(t.notebook_container)
}

test_privileged_denied if {
	"pod-security/privileged" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/privileged", "value": true}])
}

test_privileged_false_allowed if {
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/privileged", "value": false}])
}

test_host_namespaces_denied if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	"pod-security/host-namespaces" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], field: true})
}

test_host_path_denied if {
	inp := t.workload({"containers": [t.compliant_container], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
	t.rules(pod_security.violation) == {"pod-security/host-path"} with input as inp
}

test_volume_types if {
	ok := t.workload({"containers": [t.compliant_container], "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "persistentVolumeClaim": {"claimName": "x"}}]})
	count(pod_security.violation) == 0 with input as ok
	bad := t.workload({"containers": [t.compliant_container], "volumes": [{"name": "g", "gitRepo": {"repository": "x"}}]})
	t.rules(pod_security.violation) == {"pod-security/volume-types"} with input as bad
}

test_host_ports_denied if {
	"pod-security/host-ports" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/ports", "value": [{"containerPort": 80, "hostPort": 8080}]}])
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/ports", "value": [{"containerPort": 80}]}])
}

test_capabilities if {
	"pod-security/capabilities" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/capabilities/add", "value": ["SYS_ADMIN"]}])
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/capabilities/add", "value": ["NET_BIND_SERVICE"]}])
}

test_privilege_escalation_denied if {
	"pod-security/privilege-escalation" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "replace", "path": "/securityContext/allowPrivilegeEscalation", "value": true}])
}

test_run_as_root_denied if {
	"pod-security/run-as-root" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "replace", "path": "/securityContext/runAsUser", "value": 0}])
	"pod-security/run-as-root" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "replace", "path": "/securityContext/runAsNonRoot", "value": false}])
	"pod-security/run-as-root" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"runAsUser": 0}})
	"pod-security/run-as-root" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"runAsNonRoot": false}})
}

test_pod_level_non_root_satisfies_containers if {
	c := json.patch(t.compliant_container, [{"op": "remove", "path": "/securityContext/runAsNonRoot"}, {"op": "remove", "path": "/securityContext/runAsUser"}])
	inp := t.workload({"containers": [c], "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}})
	count(pod_security.omission) == 0 with input as inp
}

test_seccomp if {
	"pod-security/seccomp" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"seccompProfile": {"type": "Unconfined"}}})
	"pod-security/seccomp" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/seccompProfile", "value": {"type": "Unconfined"}}])
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/seccompProfile", "value": {"type": "Localhost", "localhostProfile": "x.json"}}])
}

test_notebook_keeps_no_other_seccomp_profile if {
	meta := {"labels": {"component": "singleuser-server"}}
	hub := "system:serviceaccount:jhub:hub"
	runtime_default := {"type": "RuntimeDefault"}
	other_localhost := {"type": "Localhost", "localhostProfile": "mine.json"}

	# Pod level and container level, RuntimeDefault and another Localhost file: refused by name.
	pod_level := t.admission(meta, {"containers": [t.compliant_container], "securityContext": {"seccompProfile": runtime_default}}, hub)
	some v in pod_security.violation with input as pod_level
	v.rule == "pod-security/seccomp"
	contains(v.message, "sets seccomp profile RuntimeDefault; notebooks run under Localhost jovial-guard/notebook.json")
	container_level := t.admission(meta, {"containers": [json.patch(t.compliant_container, [{"op": "replace", "path": "/securityContext/seccompProfile", "value": other_localhost}])]}, hub)
	some w in pod_security.violation with input as container_level
	contains(w.message, "Notebook container \"notebook\" sets seccomp profile Localhost mine.json")

	# The policy's own profile, or none at all, is fine; platform pods may state RuntimeDefault.
	count(pod_security.violation) == 0 with input as t.admission(meta, {"containers": [t.compliant_container]}, hub)
	count(pod_security.violation) == 0 with input as t.admission(meta, {"containers": [t.notebook_container]}, hub)
	count(pod_security.violation) == 0 with input as t.admission({"labels": {"component": "hub"}}, {"containers": [t.compliant_container], "securityContext": {"seccompProfile": runtime_default}}, hub)

	# The embedded engine (origin spawn) has no notebook setting here: its profile is rendered.
	count(pod_security.violation) == 0 with input as t.workload({"containers": [t.compliant_container], "securityContext": {"seccompProfile": runtime_default}})
}

test_legacy_seccomp_annotation_denied if {
	inp := json.patch(t.one(t.compliant_container), [{"op": "add", "path": "/workload/pod/metadata/annotations", "value": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}])
	"pod-security/seccomp" in t.rules(pod_security.violation) with input as inp
}

test_apparmor if {
	bad := json.patch(t.one(t.compliant_container), [{"op": "add", "path": "/workload/pod/metadata/annotations", "value": {"container.apparmor.security.beta.kubernetes.io/notebook": "unconfined"}}])
	"pod-security/apparmor" in t.rules(pod_security.violation) with input as bad
	good := json.patch(t.one(t.compliant_container), [{"op": "add", "path": "/workload/pod/metadata/annotations", "value": {"container.apparmor.security.beta.kubernetes.io/notebook": "localhost/nb"}}])
	count(pod_security.violation) == 0 with input as good
	"pod-security/apparmor" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"appArmorProfile": {"type": "Unconfined"}}})
	"pod-security/apparmor" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/appArmorProfile", "value": {"type": "Unconfined"}}])
}

test_sysctls if {
	"pod-security/sysctls" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}})
	count(pod_security.violation) == 0 with input as t.workload({"containers": [t.compliant_container], "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}})
}

test_proc_mount if {
	"pod-security/proc-mount" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/procMount", "value": "Unmasked"}])
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/procMount", "value": "Default"}])
}

test_selinux if {
	"pod-security/selinux" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/seLinuxOptions", "value": {"type": "spc_t"}}])
	"pod-security/selinux" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"seLinuxOptions": {"user": "system_u"}}})
	"pod-security/selinux" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"seLinuxOptions": {"role": "sysadm_r"}}})
	count(pod_security.violation) == 0 with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/seLinuxOptions", "value": {"type": "container_t", "level": "s0:c1"}}])
}

test_host_process if {
	"pod-security/host-process" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"windowsOptions": {"hostProcess": true}}})
	"pod-security/host-process" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "add", "path": "/securityContext/windowsOptions", "value": {"hostProcess": true}}])
}

test_read_only_root if {
	"pod-security/read-only-root" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "replace", "path": "/securityContext/readOnlyRootFilesystem", "value": false}])
}

test_read_only_root_not_required_outside_notebooks if {
	c := json.patch(t.compliant_container, [{"op": "replace", "path": "/securityContext/readOnlyRootFilesystem", "value": false}])
	inp := t.admission({"name": "batch"}, {"containers": [c], "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}, "someone")
	count(pod_security.violation) == 0 with input as inp
	count(pod_security.omission) == 0 with input as inp
}

test_ephemeral_and_init_containers_are_checked if {
	bad := json.patch(t.compliant_container, [{"op": "add", "path": "/securityContext/privileged", "value": true}])
	"pod-security/privileged" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "initContainers": [bad]})
	"pod-security/privileged" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "ephemeralContainers": [bad]})
}

test_malformed_ids_denied if {
	"pod-security/malformed-ids" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"runAsUser": [1000]}})
	"pod-security/malformed-ids" in t.rules(pod_security.violation) with input as t.patched(t.compliant_container, [{"op": "replace", "path": "/securityContext/runAsUser", "value": "1000"}])
	"pod-security/malformed-ids" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"fsGroup": 1.5}})
	"pod-security/malformed-ids" in t.rules(pod_security.violation) with input as t.workload({"containers": [t.compliant_container], "securityContext": {"runAsGroup": -1}})
}

test_probe_and_lifecycle_host_denied if {
	probe := t.patched(t.compliant_container, [{"op": "add", "path": "/livenessProbe", "value": {"httpGet": {"host": "169.254.169.254", "port": 80}}}])
	t.rules(pod_security.violation) == {"pod-security/probe-host"} with input as probe
	tcp := t.patched(t.compliant_container, [{"op": "add", "path": "/readinessProbe", "value": {"tcpSocket": {"host": "10.0.0.1", "port": 22}}}])
	t.rules(pod_security.violation) == {"pod-security/probe-host"} with input as tcp
	hook := t.patched(t.compliant_container, [{"op": "add", "path": "/lifecycle", "value": {"preStop": {"httpGet": {"host": "node", "port": 10250}}}}])
	t.rules(pod_security.violation) == {"pod-security/probe-host"} with input as hook
	fine := t.patched(t.compliant_container, [{"op": "add", "path": "/startupProbe", "value": {"httpGet": {"host": "", "port": 8888}}}])
	count(pod_security.violation) == 0 with input as fine
}

test_v1_37_safe_sysctls_allowed if {
	every name in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"] {
		count(pod_security.violation) == 0 with input as t.workload({"containers": [t.compliant_container], "securityContext": {"sysctls": [{"name": name, "value": "1"}]}})
	}
}

test_image_volumes_allowed if {
	spec := {"containers": [t.compliant_container], "volumes": [{"name": "data", "image": {"reference": "quay.io/jupyter/datasets:1"}}]}
	count(pod_security.violation) == 0 with input as t.workload(spec)
}

test_empty_apparmor_annotation_allowed if {
	inp := json.patch(t.one(t.compliant_container), [{"op": "add", "path": "/workload/pod/metadata/annotations", "value": {"container.apparmor.security.beta.kubernetes.io/notebook": ""}}])
	count(pod_security.violation) == 0 with input as inp
}

platform(spec) := json.patch(t.workload(spec), [
	{"op": "replace", "path": "/workload/pod/metadata/labels", "value": {"app": "tools"}},
	{"op": "replace", "path": "/workload/origin", "value": "admission"},
])

test_host_users_false_relaxes_root_for_platform_pods if {
	root := json.patch(t.compliant_container, [{"op": "replace", "path": "/securityContext/runAsUser", "value": 0}, {"op": "replace", "path": "/securityContext/runAsNonRoot", "value": false}])
	count(pod_security.violation) == 0 with input as platform({"containers": [root], "hostUsers": false})
	t.rules(pod_security.violation) == {"pod-security/run-as-root"} with input as platform({"containers": [root]})

	# Notebooks never run as root, user namespace or not.
	t.rules(pod_security.violation) == {"pod-security/run-as-root"} with input as t.workload({"containers": [root], "hostUsers": false})

	# procMount stays restricted even with hostUsers: false (restricted, v1.35+).
	unmasked := json.patch(t.compliant_container, [{"op": "add", "path": "/securityContext/procMount", "value": "Unmasked"}])
	t.rules(pod_security.violation) == {"pod-security/proc-mount"} with input as platform({"containers": [unmasked], "hostUsers": false})
}

stage_volume(path) := {"name": "jg-storage", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}

stage_mount := {"name": "jg-storage", "mountPath": "/lustre", "readOnly": true, "mountPropagation": "HostToContainer"}

with_stage(volume, mount) := {"containers": [json.patch(t.compliant_container, [{"op": "add", "path": "/volumeMounts", "value": [mount]}])], "volumes": [volume]}

hub_notebook(spec) := t.admission({"labels": {"component": "singleuser-server"}}, spec, "system:serviceaccount:jhub:hub")

host_path_denied(inp) if {
	"pod-security/host-path" in t.rules(pod_security.violation) with input as inp
		with data.settings.node.staging_root as "/var/lib/jgn/staging"
}

test_notebook_may_mount_only_its_own_users_staging_directory if {
	# alice's pod from the hub: her own staging directory, read-only, HostToContainer.
	own := hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging/alice"), stage_mount))
	count(pod_security.violation) == 0 with input as own with data.settings.node.staging_root as "/var/lib/jgn/staging"

	# Another user's directory, the root itself, a spelling variant, any other host path.
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging/bob"), stage_mount)))
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging"), stage_mount)))
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging//alice"), stage_mount)))
	host_path_denied(hub_notebook(with_stage(stage_volume("/etc"), stage_mount)))

	# Writable, propagating back to the host, or through a subPath.
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging/alice"), object.union(stage_mount, {"readOnly": false}))))
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging/alice"), object.union(stage_mount, {"mountPropagation": "Bidirectional"}))))
	host_path_denied(hub_notebook(with_stage(stage_volume("/var/lib/jgn/staging/alice"), object.union(stage_mount, {"subPath": "home"}))))

	# Not a directory (a socket or a file of the same name).
	host_path_denied(hub_notebook(with_stage({"name": "jg-storage", "hostPath": {"path": "/var/lib/jgn/staging/alice", "type": "Socket"}}, stage_mount)))
}

test_staging_directory_needs_the_hub_and_the_setting if {
	spec := with_stage(stage_volume("/var/lib/jgn/staging/alice"), stage_mount)

	# Claiming alice's labels and annotations without being the hub: the requester is the user.
	host_path_denied(t.admission({"labels": {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}}, spec, "alice"))
	host_path_denied(t.admission({"labels": {"component": "singleuser-server"}}, spec, "mallory"))

	# A platform pod never has one; without settings.node.staging_root nobody has one.
	host_path_denied(t.admission({"labels": {"component": "hub"}}, spec, "system:serviceaccount:jhub:hub"))
	"pod-security/host-path" in t.rules(pod_security.violation) with input as hub_notebook(spec)
}

kube_notebook(spec) := t.admission({"labels": {"component": "singleuser-server"}}, spec, "system:serviceaccount:jhub:hub")

test_notebook_user_namespace_follows_node_support if {
	asks_host := {"containers": [t.compliant_container], "hostUsers": true}
	own := {"containers": [t.compliant_container], "hostUsers": false}
	silent := {"containers": [t.compliant_container]}
	omitted := "the notebook pod shares the host's user namespace: hostUsers false is set"

	# Nodes without support (the default): the pod's choice stands.
	not "pod-security/host-users" in t.rules(pod_security.violation) with input as kube_notebook(asks_host)
	not omitted in pod_security.omission with input as kube_notebook(silent)

	# Nodes with support: the host's user namespace is refused, a missing hostUsers is set.
	"pod-security/host-users" in t.rules(pod_security.violation) with input as kube_notebook(asks_host) with data.settings.node.user_namespaces as true
	omitted in pod_security.omission with input as kube_notebook(silent) with data.settings.node.user_namespaces as true
	not omitted in pod_security.omission with input as kube_notebook(own) with data.settings.node.user_namespaces as true
	not "pod-security/host-users" in t.rules(pod_security.violation) with input as kube_notebook(own) with data.settings.node.user_namespaces as true

	# Platform pods keep their choice either way.
	not "pod-security/host-users" in t.rules(pod_security.violation) with input as platform({"containers": [t.compliant_container], "hostUsers": true}) with data.settings.node.user_namespaces as true
}
