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

test_gpu_counts_beyond_any_node_are_malformed if {
	nines := concat("", [x | some _ in numbers.range(1, 309); x := "9"])
	every amount in [nines, 1e300, "1000000000000000000"] {
		inp := t.with_groups(with_resources({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": amount}}), ["gpu-users"])
		t.rules(resources.violation) == {"resources/gpu"} with input as inp
	}
	inp := t.with_groups(with_resources({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "999999999999999999"}}), ["gpu-users"])
	t.rules(resources.violation) == {"resources/gpu"} with input as inp
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

with_resources(res) := t.patched(t.compliant_container, [{"op": "replace", "path": "/resources", "value": res}])

test_every_vendor_denied if {
	every name in ["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "amd.com/gpu", "gpu.intel.com/i915"] {
		"resources/gpu" in t.rules(resources.violation) with input as with_resources({"limits": {"cpu": "1", "memory": "2Gi", name: "1"}})
	}
}

test_accelerators_within_group_max if {
	res := {"limits": {"cpu": "1", "memory": "2Gi", "amd.com/gpu": 1}, "requests": {"amd.com/gpu": "1"}}
	count(resources.violation) == 0 with input as t.with_groups(with_resources(res), ["gpu-users"])
	res2 := {"limits": {"cpu": "1", "memory": "2Gi", "amd.com/gpu": "1", "nvidia.com/gpu": "1"}}
	"resources/gpu" in t.rules(resources.violation) with input as t.with_groups(with_resources(res2), ["gpu-users"])
	"resources/gpu" in t.rules(resources.violation) with input as with_resources({"limits": {"amd.com/gpu": "one"}})
}

test_other_extended_resources_are_not_accelerators if {
	count(resources.violation) == 0 with input as with_resources({"limits": {"cpu": "1", "memory": "2Gi", "example.com/dongle": "3"}})
}

test_dra_claims_are_limited if {
	spec := {"containers": [t.compliant_container], "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "a-gpu"}]}
	t.rules(resources.violation) == {"resources/dra"} with input as t.workload(spec)
	by_name := {"containers": [t.compliant_container], "resourceClaims": [{"name": "gpu", "resourceClaimName": "shared"}]}
	t.rules(resources.violation) == {"resources/dra"} with input as t.workload(by_name)
	count(resources.violation) == 0 with input as t.workload(spec) with data.settings.resources.group_max["*"].dra_claims as 1
}

test_platform_pods_have_no_per_group_cpu_caps if {
	big := {"limits": {"cpu": "16", "memory": "64Gi"}}
	inp := json.patch(with_resources(big), [{"op": "replace", "path": "/workload/pod/metadata/labels", "value": {"component": "hub"}}, {"op": "replace", "path": "/workload/origin", "value": "admission"}])
	count(resources.violation) == 0 with input as inp
	"resources/cpu" in t.rules(resources.violation) with input as with_resources(big)
}
