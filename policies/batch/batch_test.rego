# The batch entry point only repeats main.decision per item, so these tests say nothing
# about what the policy allows: they hold for any policy.
package jovial_guard.batch_test

import data.jovial_guard.batch
import data.jovial_guard.main

pod(container) := {"workload": {
	"origin": "check",
	"kind": "Pod",
	"name": "jupyter-batch",
	"namespace": "jhub",
	"operation": "CREATE",
	"user": {"name": "batch", "groups": [], "admin": false},
	"profile": null,
	"request_user": null,
	"request_groups": [],
	"pod": {"metadata": {"name": "jupyter-batch"}, "spec": {"containers": [container]}},
	"extra": {},
}}

plain := pod({"name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-05-27"})

privileged := pod({
	"name": "notebook",
	"image": "quay.io/jupyter/base-notebook:2024-05-27",
	"securityContext": {"privileged": true},
})

test_each_item_decided_as_alone if {
	got := batch.decisions with input as {"batch": [plain, privileged, plain]}
	count(got) == 3
	got[0] == main.decision with input as plain
	got[1] == main.decision with input as privileged
	got[2] == got[0]
}

test_empty_batch_has_no_decisions if {
	got := batch.decisions with input as {"batch": []}
	got == {}
}
