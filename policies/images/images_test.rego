package jovial_guard.images_test

import data.jovial_guard.images
import data.jovial_guard.testing as t

with_image(image) := t.patched(t.compliant_container, [{"op": "replace", "path": "/image", "value": image}])

test_allowed_registry_with_tag if {
	count(images.violation) == 0 with input as with_image("quay.io/jupyter/scipy-notebook:2024-05-27")
	count(images.violation) == 0 with input as with_image("localhost/jovial-guard/notebook:v1")
	count(images.violation) == 0 with input as with_image("jupyter/base-notebook:2024-05-27")
}

test_digest_is_pinned if {
	count(images.violation) == 0 with input as with_image("quay.io/jupyter/base-notebook@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
}

test_unknown_registry_denied if {
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("evil.example.com/jupyter/base-notebook:1")
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("ubuntu:22.04")
}

test_registry_spelling_cannot_dodge_the_allowlist if {
	# "quay.io.evil.com/jupyter/..." starts with "quay.io" but is another registry.
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("quay.io.evil.com/jupyter/x:1")
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("localhost:5000/jovial-guard/notebook:v1")
}

test_latest_and_untagged_denied if {
	t.rules(images.violation) == {"images/latest"} with input as with_image("quay.io/jupyter/base-notebook:latest")
	t.rules(images.violation) == {"images/latest"} with input as with_image("quay.io/jupyter/base-notebook")
	t.rules(images.violation) == {"images/not-allowed", "images/latest"} with input as with_image("ubuntu")
}

test_latest_allowed_by_data if {
	count(images.violation) == 0 with input as with_image("quay.io/jupyter/base-notebook:latest")
		with data.settings.images.allow_latest as true
}

test_missing_image if {
	c := json.patch(t.compliant_container, [{"op": "remove", "path": "/image"}])
	"images/missing" in t.rules(images.violation) with input as t.one(c)
}

test_entries_match_at_repository_boundaries if {
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("registry.k8s.io/pause-but-not-really/x:1")
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("registry.k8s.io/pausex:3.10")
	count(images.violation) == 0 with input as with_image("registry.k8s.io/pause:3.10.2")
	count(images.violation) == 0 with input as with_image("registry.k8s.io/pause@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	t.rules(images.violation) == {"images/not-allowed"} with input as with_image("quay.io/jupyterhubx/k8s-hub:4.0.0")
}

test_z2jh_defaults_are_allowed if {
	count(images.violation) == 0 with input as with_image("quay.io/jupyterhub/k8s-singleuser-sample:4.2.0")
	count(images.violation) == 0 with input as with_image("quay.io/jupyterhub/k8s-hub:4.2.0")
	count(images.violation) == 0 with input as with_image("traefik:v3.7.8")
	count(images.violation) == 0 with input as with_image("registry.k8s.io/kube-scheduler:v1.35.7")
}

test_repository_of_registry_with_port if {
	images.repository("localhost:5000/jovial-guard/notebook:v1") == "localhost:5000/jovial-guard/notebook"
	images.repository("quay.io/jupyter/x@sha256:ab") == "quay.io/jupyter/x"
}
