# Resource policy: every container has limits, within the maximum of the user's groups.
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

violation contains {"rule": "resources/cpu", "message": msg} if {
	some c in limited_containers
	some amount in amounts(c, "cpu")
	cpu(amount) > max_cpu
	msg := sprintf("Container %q asks for %v CPU; your groups allow at most %v. Choose a smaller profile.", [c.name, amount, max_cpu])
}

violation contains {"rule": "resources/memory", "message": msg} if {
	some c in limited_containers
	some amount in amounts(c, "memory")
	memory(amount) > max_memory
	msg := sprintf("Container %q asks for %v memory; your groups allow at most %v bytes (%v GiB). Choose a smaller profile.", [c.name, amount, max_memory, max_memory / 1073741824])
}

violation contains {"rule": "resources/gpu", "message": msg} if {
	some c in limited_containers
	some raw in amounts(c, "nvidia.com/gpu")
	amount := to_number(raw)
	amount > max_gpu
	msg := sprintf("Container %q asks for %v GPUs; your groups allow %v.", [c.name, amount, max_gpu])
}

violation contains {"rule": "resources/gpu", "message": msg} if {
	some c in limited_containers
	some amount in amounts(c, "nvidia.com/gpu")
	not is_number(amount)
	not regex.match(`^[0-9]+$`, amount)
	msg := sprintf("Container %q has a malformed GPU amount %v.", [c.name, amount])
}

violation contains {"rule": "resources/malformed", "message": msg} if {
	some c in limited_containers
	some amount in amounts(c, "cpu")
	not cpu(amount)
	msg := sprintf("Container %q has a malformed CPU amount %v.", [c.name, amount])
}

violation contains {"rule": "resources/malformed", "message": msg} if {
	some c in limited_containers
	some amount in amounts(c, "memory")
	not memory(amount)
	msg := sprintf("Container %q has a malformed memory amount %v.", [c.name, amount])
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
