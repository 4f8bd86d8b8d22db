# Pod security at least as strict as Kubernetes Pod Security "restricted", policy version
# v1.37 (k8s.io/pod-security-admission v0.37), for every pod; notebooks get more (a
# read-only root, never root even in a user namespace).
#
# `violation` lists what a workload explicitly asks for and must never get: those are
# denied. `omission` lists what is merely missing and is fixed by mutation (the patch
# rendered from the SecuritySpec): those are reported as warnings, not denials.
package jovial_guard.pod_security

import data.jovial_guard.lib
import data.jovial_guard.profiles
import data.jovial_guard.storage

# Pod Security "baseline"/"restricted" safe sysctls, as of policy version v1.37.
safe_sysctls := {
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
	"net.ipv4.tcp_rmem",
	"net.ipv4.tcp_wmem",
	"net.ipv4.tcp_slow_start_after_idle",
	"net.ipv4.tcp_notsent_lowat",
}

# Pod Security "restricted" volume types.
allowed_volume_types := {
	"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
	"image", "persistentVolumeClaim", "projected", "secret",
}

allowed_capability_adds := {"NET_BIND_SERVICE"}

allowed_selinux_types := {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

host_namespace_fields := ["hostNetwork", "hostPID", "hostIPC"]

# --- violations: denied -------------------------------------------------------------

violation contains {"rule": "pod-security/privileged", "message": msg} if {
	some c in lib.containers
	lib.security_context(c).privileged == true
	msg := sprintf("Container %q asks to run privileged, which gives it the whole host. Remove securityContext.privileged.", [c.name])
}

violation contains {"rule": "pod-security/host-namespaces", "message": msg} if {
	some field in host_namespace_fields
	lib.spec[field] == true
	msg := sprintf("The pod asks for %s: true, which shares the host's namespace. Remove %s.", [field, field])
}

violation contains {"rule": "pod-security/host-path", "message": msg} if {
	some volume in object.get(lib.spec, "volumes", [])
	volume.hostPath
	not storage_stage_volume(volume)
	msg := sprintf("Volume %q mounts a host path (%v). Host paths are not allowed; use a persistent volume claim or the storage grant.", [object.get(volume, "name", ""), object.get(volume.hostPath, "path", "")])
}

# The one host path a notebook may have: its own user's staging directory on the node
# (storage.node_stage), a directory, mounted read-only by every container that mounts it,
# with no propagation from the pod to the host.
storage_stage_volume(volume) if {
	volume.hostPath.path == storage.node_stage
	object.get(volume.hostPath, "type", "") in {"Directory", "DirectoryOrCreate"}
	not stage_mounted_unsafely(volume.name)
}

stage_mounted_unsafely(name) if {
	some c in lib.containers
	some m in object.get(c.container, "volumeMounts", [])
	m.name == name
	not safe_stage_mount(m)
}

safe_stage_mount(m) if {
	m.readOnly == true
	object.get(m, "mountPropagation", "None") in {"None", "HostToContainer"}
	object.get(m, "subPath", "") == ""
	object.get(m, "subPathExpr", "") == ""
}

violation contains {"rule": "pod-security/volume-types", "message": msg} if {
	some volume in object.get(lib.spec, "volumes", [])
	some kind, _ in volume
	not kind in {"name", "hostPath"}
	not kind in allowed_volume_types
	msg := sprintf("Volume %q has type %s, which is not allowed. Allowed: %s.", [object.get(volume, "name", ""), kind, concat(", ", sort([t | some t in allowed_volume_types]))])
}

violation contains {"rule": "pod-security/host-ports", "message": msg} if {
	some c in lib.containers
	some port in object.get(c.container, "ports", [])
	object.get(port, "hostPort", 0) != 0
	msg := sprintf("Container %q asks for host port %v. Host ports are not allowed; expose the port through a Service.", [c.name, port.hostPort])
}

violation contains {"rule": "pod-security/capabilities", "message": msg} if {
	some c in lib.containers
	some cap in object.get(object.get(lib.security_context(c), "capabilities", {}), "add", [])
	not cap in allowed_capability_adds
	msg := sprintf("Container %q asks for capability %v. Only NET_BIND_SERVICE may be added; all others are dropped.", [c.name, cap])
}

violation contains {"rule": "pod-security/privilege-escalation", "message": msg} if {
	some c in lib.containers
	lib.security_context(c).allowPrivilegeEscalation == true
	msg := sprintf("Container %q sets allowPrivilegeEscalation: true. Remove it; it is set to false for you.", [c.name])
}

violation contains {"rule": "pod-security/run-as-root", "message": msg} if {
	root_forbidden
	lib.pod_security_context.runAsNonRoot == false
	msg := "The pod sets runAsNonRoot: false. Notebook containers never run as root; remove it."
}

violation contains {"rule": "pod-security/run-as-root", "message": msg} if {
	root_forbidden
	some c in lib.containers
	lib.security_context(c).runAsNonRoot == false
	msg := sprintf("Container %q sets runAsNonRoot: false. Containers never run as root; remove it.", [c.name])
}

violation contains {"rule": "pod-security/run-as-root", "message": msg} if {
	root_forbidden
	lib.pod_security_context.runAsUser == 0
	msg := "The pod asks to run as uid 0 (root). Remove runAsUser or use a non-zero uid."
}

violation contains {"rule": "pod-security/run-as-root", "message": msg} if {
	root_forbidden
	some c in lib.containers
	lib.security_context(c).runAsUser == 0
	msg := sprintf("Container %q asks to run as uid 0 (root). Remove runAsUser or use a non-zero uid.", [c.name])
}

violation contains {"rule": "pod-security/seccomp", "message": msg} if {
	not lib.pod_security_context.seccompProfile.type in {"RuntimeDefault", "Localhost"}
	lib.pod_security_context.seccompProfile.type
	msg := sprintf("The pod sets seccomp profile %v. Only RuntimeDefault or Localhost are allowed.", [lib.pod_security_context.seccompProfile.type])
}

violation contains {"rule": "pod-security/seccomp", "message": msg} if {
	some c in lib.containers
	profile := lib.security_context(c).seccompProfile.type
	not profile in {"RuntimeDefault", "Localhost"}
	msg := sprintf("Container %q sets seccomp profile %v. Only RuntimeDefault or Localhost are allowed.", [c.name, profile])
}

violation contains {"rule": "pod-security/seccomp", "message": msg} if {
	some key, value in lib.annotations
	startswith(key, "seccomp.security.alpha.kubernetes.io/")
	value == "unconfined"
	msg := sprintf("Annotation %s asks for an unconfined seccomp profile. Remove it.", [key])
}

# A notebook runs under the seccomp profile its notebook profile chooses (profiles.seccomp):
# the mutation only fills in a missing profile, so a notebook pod or container that states a
# different one is refused rather than silently kept or overwritten. The embedded engine's
# workloads (origin spawn) carry no stated profile: the spawn renders its own.
violation contains {"rule": "pod-security/seccomp", "message": msg} if {
	lib.is_notebook
	lib.origin != "spawn"
	wanted := profiles.seccomp
	stated := lib.pod_security_context.seccompProfile
	stated.type in {"RuntimeDefault", "Localhost"}
	not same_profile(stated, wanted)
	msg := sprintf("The notebook pod sets seccomp profile %s; notebooks run under %s. Remove securityContext.seccompProfile: it is set for you.", [profile_name(stated), profile_name(wanted)])
}

violation contains {"rule": "pod-security/seccomp", "message": msg} if {
	lib.is_notebook
	lib.origin != "spawn"
	wanted := profiles.seccomp
	some c in lib.containers
	stated := lib.security_context(c).seccompProfile
	stated.type in {"RuntimeDefault", "Localhost"}
	not same_profile(stated, wanted)
	msg := sprintf("Notebook container %q sets seccomp profile %s; notebooks run under %s. Remove its securityContext.seccompProfile.", [c.name, profile_name(stated), profile_name(wanted)])
}

same_profile(stated, wanted) if {
	stated.type == wanted.type
	stated.type != "Localhost"
}

same_profile(stated, wanted) if {
	stated.type == "Localhost"
	wanted.type == "Localhost"
	object.get(stated, "localhostProfile", "") == wanted.localhostProfile
}

profile_name(p) := sprintf("Localhost %s", [object.get(p, "localhostProfile", "")]) if p.type == "Localhost"

else := p.type

violation contains {"rule": "pod-security/apparmor", "message": msg} if {
	some key, value in lib.annotations
	startswith(key, "container.apparmor.security.beta.kubernetes.io/")
	not valid_apparmor_annotation(value)
	msg := sprintf("Annotation %s asks for AppArmor profile %q. Only runtime/default or localhost/<profile> are allowed.", [key, value])
}

violation contains {"rule": "pod-security/apparmor", "message": msg} if {
	profile := lib.pod_security_context.appArmorProfile.type
	not profile in {"RuntimeDefault", "Localhost"}
	msg := sprintf("The pod sets AppArmor profile %v. Only RuntimeDefault or Localhost are allowed.", [profile])
}

violation contains {"rule": "pod-security/apparmor", "message": msg} if {
	some c in lib.containers
	profile := lib.security_context(c).appArmorProfile.type
	not profile in {"RuntimeDefault", "Localhost"}
	msg := sprintf("Container %q sets AppArmor profile %v. Only RuntimeDefault or Localhost are allowed.", [c.name, profile])
}

valid_apparmor_annotation(value) if value == "runtime/default"

valid_apparmor_annotation(value) if value == ""

valid_apparmor_annotation(value) if startswith(value, "localhost/")

violation contains {"rule": "pod-security/sysctls", "message": msg} if {
	some sysctl in object.get(lib.pod_security_context, "sysctls", [])
	not sysctl.name in safe_sysctls
	msg := sprintf("The pod sets sysctl %v, which is not namespaced safely. Allowed: %s.", [sysctl.name, concat(", ", sort([s | some s in safe_sysctls]))])
}

violation contains {"rule": "pod-security/proc-mount", "message": msg} if {
	some c in lib.containers
	mount := lib.security_context(c).procMount
	mount != "Default"
	msg := sprintf("Container %q sets procMount %v. Only Default is allowed.", [c.name, mount])
}

violation contains {"rule": "pod-security/selinux", "message": msg} if {
	some context in selinux_contexts
	bad_selinux(context.options)
	msg := sprintf("%s sets SELinux options %v. Only the container types are allowed, and user/role must not be set.", [context.where, context.options])
}

selinux_contexts contains {"where": "The pod", "options": lib.pod_security_context.seLinuxOptions}

selinux_contexts contains {"where": sprintf("Container %q", [c.name]), "options": options} if {
	some c in lib.containers
	options := lib.security_context(c).seLinuxOptions
}

bad_selinux(options) if not object.get(options, "type", "") in allowed_selinux_types

bad_selinux(options) if object.get(options, "user", "") != ""

bad_selinux(options) if object.get(options, "role", "") != ""

violation contains {"rule": "pod-security/host-process", "message": msg} if {
	lib.pod_security_context.windowsOptions.hostProcess == true
	msg := "The pod asks for a Windows host process. Not allowed."
}

violation contains {"rule": "pod-security/host-process", "message": msg} if {
	some c in lib.containers
	lib.security_context(c).windowsOptions.hostProcess == true
	msg := sprintf("Container %q asks for a Windows host process. Not allowed.", [c.name])
}

violation contains {"rule": "pod-security/read-only-root", "message": msg} if {
	lib.is_notebook
	some c in lib.containers
	c.kind != "ephemeralContainers"
	lib.security_context(c).readOnlyRootFilesystem == false
	msg := sprintf("Notebook container %q sets readOnlyRootFilesystem: false. Notebook containers run with a read-only root; write to your home directory or /tmp instead.", [c.name])
}

violation contains {"rule": "pod-security/malformed-ids", "message": msg} if {
	some context in id_contexts
	some field, value in object.filter(context.security_context, ["runAsUser", "runAsGroup", "fsGroup"])
	not valid_id(value)
	msg := sprintf("%s sets %s to %v, which is not a valid numeric id.", [context.where, field, value])
}

id_contexts contains {"where": "The pod", "security_context": lib.pod_security_context}

id_contexts contains {"where": sprintf("Container %q", [c.name]), "security_context": lib.security_context(c)} if {
	some c in lib.containers
}

valid_id(value) if {
	is_number(value)
	value >= 0
	value == floor(value)
}

# Probes and lifecycle handlers with a host make the kubelet connect elsewhere than the
# pod (cloud metadata, node-local ports): baseline since v1.34.
probe_handlers := ["livenessProbe", "readinessProbe", "startupProbe"]

lifecycle_handlers := ["postStart", "preStop"]

handlers(c) := [h | some name in probe_handlers; h := object.get(c.container, name, null); is_object(h)]

lifecycle(c) := [h | some name in lifecycle_handlers; h := object.get(object.get(c.container, "lifecycle", {}), name, null); is_object(h)]

# Each container's probe and lifecycle handlers, [container name, handler].
container_handlers contains [c.name, handler] if {
	some c in lib.containers
	some name in probe_handlers
	handler := c.container[name]
	is_object(handler)
}

container_handlers contains [c.name, handler] if {
	some c in lib.containers
	some name in lifecycle_handlers
	handler := c.container.lifecycle[name]
	is_object(handler)
}

violation contains {"rule": "pod-security/probe-host", "message": msg} if {
	some [name, handler] in container_handlers
	some action in ["httpGet", "tcpSocket"]
	host := object.get(object.get(handler, action, {}), "host", "")
	host != ""
	msg := sprintf("Container %q has a probe or lifecycle handler with host %q, which makes the kubelet connect to another machine. Remove the host; probes go to the pod itself.", [name, host])
}

# Running as uid 0 is forbidden, except (Pod Security v1.35+) in a platform pod with its
# own user namespace (hostUsers: false), where uid 0 is no host root. Notebooks never run
# as root.
default root_forbidden := true

root_forbidden := false if {
	not lib.is_notebook
	lib.spec.hostUsers == false
}

# Where the nodes support user namespaces (settings.node.user_namespaces), a notebook runs
# in one of its own: a notebook pod may not ask for the host's (hostUsers: true).
violation contains {"rule": "pod-security/host-users", "message": msg} if {
	lib.is_notebook
	data.settings.node.user_namespaces == true
	lib.spec.hostUsers == true
	msg := "The notebook pod sets hostUsers: true. Notebooks run in a user namespace of their own on this cluster; remove hostUsers."
}

# --- omissions: fixed by mutation, reported as warnings -----------------------------

omission contains "the notebook pod shares the host's user namespace: hostUsers false is set" if {
	lib.is_notebook
	lib.origin != "spawn"
	data.settings.node.user_namespaces == true
	not "hostUsers" in object.keys(lib.spec)
}

omission contains msg if {
	not lib.pod_security_context.seccompProfile
	some c in lib.containers
	not lib.security_context(c).seccompProfile
	msg := sprintf("container %q has no seccomp profile: the policy's profile is set", [c.name])
}

omission contains msg if {
	some c in lib.containers
	not "ALL" in object.get(object.get(lib.security_context(c), "capabilities", {}), "drop", [])
	msg := sprintf("container %q does not drop all capabilities: drop ALL is set", [c.name])
}

omission contains msg if {
	some c in lib.containers
	not lib.security_context(c).allowPrivilegeEscalation == false
	msg := sprintf("container %q does not forbid privilege escalation: allowPrivilegeEscalation false is set", [c.name])
}

omission contains msg if {
	some c in lib.containers
	not runs_as_non_root(c)
	msg := sprintf("container %q is not required to run as non-root: runAsNonRoot and a non-zero uid are set", [c.name])
}

omission contains msg if {
	some c in lib.containers
	not has_uid(c)
	msg := sprintf("container %q has no uid: the policy's uid is set", [c.name])
}

omission contains msg if {
	lib.is_notebook
	some c in lib.containers
	c.kind != "ephemeralContainers"
	not lib.security_context(c).readOnlyRootFilesystem == true
	msg := sprintf("notebook container %q has a writable root: it is made read-only with writable scratch", [c.name])
}

runs_as_non_root(c) if lib.security_context(c).runAsNonRoot == true

runs_as_non_root(c) if {
	not "runAsNonRoot" in object.keys(lib.security_context(c))
	lib.pod_security_context.runAsNonRoot == true
}

has_uid(c) if lib.security_context(c).runAsUser

has_uid(c) if {
	not "runAsUser" in object.keys(lib.security_context(c))
	lib.pod_security_context.runAsUser
}
