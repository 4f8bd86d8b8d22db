package jovial_guard.resources_test

import data.jovial_guard.resources
import data.jovial_guard.testing as t

with_resources(res) := t.patched(t.compliant_container, [{"op": "replace", "path": "/resources", "value": res}])

test_within_limits if {
	count(resources.violation) == 0 with input as t.one(t.compliant_container)
	count(resources.omission) == 0 with input as t.one(t.compliant_container)
}

test_missing_limits_are_omissions if {
	inp := with_resources({})
	count(resources.violation) == 0 with input as inp
	count(resources.omission) == 2 with input as inp
}

test_cpu_above_group_max if {
	t.rules(resources.violation) == {"resources/cpu"} with input as with_resources({"limits": {"cpu": "3", "memory": "1Gi"}})
	t.rules(resources.violation) == {"resources/cpu"} with input as with_resources({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "2500m"}})
}

test_memory_above_group_max if {
	t.rules(resources.violation) == {"resources/memory"} with input as with_resources({"limits": {"cpu": "1", "memory": "5Gi"}})
}

test_larger_group_raises_the_maximum if {
	inp := t.with_groups(with_resources({"limits": {"cpu": "4", "memory": "16Gi"}}), ["large-memory"])
	count(resources.violation) == 0 with input as inp
}

test_gpu if {
	t.rules(resources.violation) == {"resources/gpu"} with input as with_resources({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}})
	inp := t.with_groups(with_resources({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}}), ["gpu-users"])
	count(resources.violation) == 0 with input as inp
	t.rules(resources.violation) == {"resources/gpu"} with input as with_resources({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "lots"}})
}

test_malformed_amounts_denied if {
	t.rules(resources.violation) == {"resources/malformed"} with input as with_resources({"limits": {"cpu": "one", "memory": "1Gi"}})
	t.rules(resources.violation) == {"resources/malformed"} with input as with_resources({"limits": {"cpu": "1", "memory": "lots"}})
}

test_ephemeral_containers_need_no_limits if {
	inp := t.workload({"containers": [t.compliant_container], "ephemeralContainers": [{"name": "debug", "image": "quay.io/jupyter/base-notebook:1"}]})
	count(resources.omission) == 0 with input as inp
}

test_numeric_quantities if {
	count(resources.violation) == 0 with input as with_resources({"limits": {"cpu": 1.5, "memory": 1073741824}})
	t.rules(resources.violation) == {"resources/cpu"} with input as with_resources({"limits": {"cpu": 3, "memory": 1073741824}})
}
