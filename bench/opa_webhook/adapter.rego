# The peer for bench/admission.py: a bare OPA acting as the admission webhook itself.
#
# OPA answers POST /v0/data/bench/opa_webhook/review with the AdmissionReview as the raw
# input and returns an AdmissionReview response, deciding with the very same policy
# (data.jovial_guard.main.decision). The input.workload is built here the way
# jovial_guard.normalize builds it (Pod and pod-template kinds), so both endpoints answer
# the same question. A bare OPA cannot render the hardening JSON Patch (that renderer is
# Python), so this peer validates only.
package bench.opa_webhook

template_paths := {
	"Pod": [],
	"Deployment": ["spec", "template"],
	"StatefulSet": ["spec", "template"],
	"DaemonSet": ["spec", "template"],
	"ReplicaSet": ["spec", "template"],
	"ReplicationController": ["spec", "template"],
	"Job": ["spec", "template"],
	"CronJob": ["spec", "jobTemplate", "spec", "template"],
	"PodTemplate": ["template"],
}

request := input.request

obj := request.object

pod_doc := object.get(obj, template_paths[obj.kind], {})

pod_metadata := object.get(pod_doc, "metadata", {})

annotations := object.get(pod_metadata, "annotations", {})

labels := object.get(pod_metadata, "labels", {})

username := object.get(annotations, "hub.jupyter.org/username", object.get(labels, "hub.jupyter.org/username", ""))

raw_groups := object.get(annotations, "jovial-guard.io/groups", "")

# A JSON list (what the hub sends), or the older comma-joined form.
groups := json.unmarshal(raw_groups) if startswith(trim_space(raw_groups), "[")

else := [trim_space(g) | some g in split(raw_groups, ","); trim_space(g) != ""]

user := {"name": username, "groups": sort(groups), "admin": lower(object.get(annotations, "jovial-guard.io/admin", "")) == "true"} if username != ""

else := null

profile := object.get(annotations, "jovial-guard.io/profile", null)

workload := {
	"origin": "admission",
	"kind": obj.kind,
	"name": object.get(obj.metadata, "name", object.get(obj.metadata, "generateName", "")),
	"namespace": object.get(request, "namespace", "default"),
	"operation": object.get(request, "operation", "CREATE"),
	"user": user,
	"profile": profile,
	"request_user": object.get(request.userInfo, "username", null),
	"request_groups": sort(object.get(request.userInfo, "groups", [])),
	"pod": {"metadata": pod_metadata, "spec": pod_doc.spec},
	"extra": {},
}

decision := d if {
	d := data.jovial_guard.main.decision with input as {"workload": workload}
}

message := concat(" ", [sprintf("[%s] %s", [r.rule, r.message]) | some r in decision.reasons])

review := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": {
		"uid": request.uid,
		"allowed": decision.allowed,
		"status": {"code": 403, "message": message},
		"warnings": decision.warnings,
		"auditAnnotations": {"policy-revision": decision.revision},
	},
} if not decision.allowed

else := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": {
		"uid": request.uid,
		"allowed": true,
		"warnings": decision.warnings,
		"auditAnnotations": {"policy-revision": decision.revision},
	},
}
