# Resource policy: every container has limits; a notebook's are within the maximum of the
# user's groups; accelerators (extended resources and DRA claims) are limited for every pod.
#
# Missing limits are fixed by mutation (the profile's values); limits above the user's
# maximum are denied. A user's maximum is the largest of their groups' maxima ("*" is
# everyone).
package jovial_guard.resources

import data.jovial_guard.lib

# The larger of the maxima over the user's groups, as numbers (cores, bytes, devices).
max_cpu := max({units.parse(m.cpu) | some g in lib.groups; m := data.settings.resources.group_max[g]})

max_memory := max({units.parse_bytes(m.memory) | some g in lib.groups; m := data.settings.resources.group_max[g]})

max_gpu := max({m.gpu | some g in lib.groups; m := data.settings.resources.group_max[g]})

limited_containers contains c if {
	some c in lib.containers
	c.kind != "ephemeralContainers"
}

limits(c) := object.get(object.get(c.container, "resources", {}), "limits", {})

# Every amount a container states for a resource, in limits or requests.
amounts(c, resource) := {amount |
	some section in ["limits", "requests"]
	amount := object.get(object.get(c.container, "resources", {}), section, {})[resource]
}

# What every limited container states, read once: [container name, resource, section, amount]
# for each entry of its limits and requests.
stated contains [c.name, resource, section, amount] if {
	some c in limited_containers
	resources := object.get(c.container, "resources", {})
	some section in ["limits", "requests"]
	some resource, amount in object.get(resources, section, {})
}

# The CPU and memory amounts each container states: [container name, amount].
cpu_amounts contains [name, amount] if some [name, "cpu", _, amount] in stated

memory_amounts contains [name, amount] if some [name, "memory", _, amount] in stated

violation contains {"rule": "resources/cpu", "message": msg} if {
	lib.is_notebook
	some [name, amount] in cpu_amounts
	cpu(amount) > max_cpu
	msg := sprintf("Container %q asks for %v CPU; your groups allow at most %v. Choose a smaller profile.", [name, amount, max_cpu])
}

violation contains {"rule": "resources/memory", "message": msg} if {
	lib.is_notebook
	some [name, amount] in memory_amounts
	memory(amount) > max_memory
	msg := sprintf("Container %q asks for %v memory; your groups allow at most %v bytes (%v GiB). Choose a smaller profile.", [name, amount, max_memory, max_memory / 1073741824])
}

# Accelerators: every extended resource whose name matches an entry of
# data.settings.resources.accelerators (an entry ending in "/" is a whole vendor domain:
# "nvidia.com/" covers nvidia.com/gpu and every nvidia.com/mig-* slice) counts towards the
# group's "gpu" maximum, summed over the pod's containers.
accelerator(resource) if {
	some entry in accelerator_domains
	startswith(resource, entry)
}

accelerator(resource) if resource in accelerator_names

accelerator_domains := [entry | some entry in data.settings.resources.accelerators; endswith(entry, "/")]

accelerator_names := {entry | some entry in data.settings.resources.accelerators}

# A name without "/" starts with no vendor domain (each ends in "/"), so cpu and memory
# skip the domain scan.
accelerator_amounts contains [name, resource, raw] if {
	some [name, resource, _, raw] in stated
	contains(resource, "/")
	accelerator(resource)
}

accelerator_amounts contains [name, resource, raw] if {
	some [name, resource, _, raw] in stated
	not contains(resource, "/")
	resource in accelerator_names
}

# Limits and requests of one resource are the same devices: count the larger per
# container and resource, then add up.
accelerator_total := sum([n |
	some key in {[a[0], a[1]] | some a in accelerator_amounts}
	n := max({to_number(a[2]) | some a in accelerator_amounts; [a[0], a[1]] == key; is_count(a[2])})
])

# A count is a whole number of devices below 10^18. A longer one is malformed (denied):
# Go's to_number refuses a string beyond float64, which would drop it from the total and
# admit the pod, and no node has that many devices.
is_count(raw) if {
	is_number(raw)
	raw >= 0
	raw < 1000000000000000000
	raw == floor(raw)
}

is_count(raw) if regex.match(`^[0-9]{1,18}$`, raw)

violation contains {"rule": "resources/gpu", "message": msg} if {
	accelerator_total > max_gpu
	msg := sprintf("The pod asks for %v accelerator devices (%s); your groups allow %v.", [accelerator_total, concat(", ", sort({a[1] | some a in accelerator_amounts})), max_gpu])
}

violation contains {"rule": "resources/gpu", "message": msg} if {
	some a in accelerator_amounts
	not is_count(a[2])
	msg := sprintf("Container %q has a malformed %s amount %v.", [a[0], a[1], a[2]])
}

# Dynamic Resource Allocation: a pod's resourceClaims (by name or from a template) can
# bind any device a DRA driver offers, so each one counts against the group's "dra_claims"
# maximum (0 unless data grants it).
max_dra_claims := max({object.get(m, "dra_claims", 0) | some g in lib.groups; m := data.settings.resources.group_max[g]})

violation contains {"rule": "resources/dra", "message": msg} if {
	claims := object.get(lib.spec, "resourceClaims", [])
	count(claims) > max_dra_claims
	msg := sprintf("The pod asks for %d dynamic resource claims (%s); your groups allow %v. Devices come with a profile that grants them.", [count(claims), concat(", ", sort([object.get(c, "name", "") | some c in claims])), max_dra_claims])
}

violation contains {"rule": "resources/malformed", "message": msg} if {
	some [name, amount] in cpu_amounts
	not cpu(amount)
	msg := sprintf("Container %q has a malformed CPU amount %v.", [name, amount])
}

violation contains {"rule": "resources/malformed", "message": msg} if {
	some [name, amount] in memory_amounts
	not memory(amount)
	msg := sprintf("Container %q has a malformed memory amount %v.", [name, amount])
}

# Quantities as numbers. A raw manifest may state them as YAML numbers (cpu: 1.5); the
# API server would have turned those into strings, `jovial-guard check` sees them raw.
cpu(amount) := amount if is_number(amount)

else := units.parse(amount)

memory(amount) := amount if is_number(amount)

else := units.parse_bytes(amount)

omission contains msg if {
	some c in limited_containers
	some resource in ["cpu", "memory"]
	not limits(c)[resource]
	msg := sprintf("container %q has no %s limit: the profile's limit is set", [c.name, resource])
}
