# Image policy: images come from allowed registries/repositories and are pinned.
#
# Allowlist entries match at registry or repository boundaries only: an entry ending in
# "/" ("quay.io/jupyterhub/") admits every repository under that path; any other entry
# ("registry.k8s.io/pause") admits exactly that repository, whatever its tag or digest,
# and nothing that merely starts with the same characters
# ("registry.k8s.io/pause-but-not-really/x").
#
# References are normalized the way container engines read them ("jupyter/x" is
# "docker.io/jupyter/x", "ubuntu" is "docker.io/library/ubuntu"), so an allowlist entry
# cannot be dodged by spelling. ":latest" (or no tag) is refused unless data allows it:
# a moving tag means the workload that was decided is not the one that runs.
package jovial_guard.images

import data.jovial_guard.lib

violation contains {"rule": "images/not-allowed", "message": msg} if {
	some c in lib.containers
	ref := normalize(c.container.image)
	not allowed(ref)
	msg := sprintf("Container %q uses image %q, which is not from an allowed registry. Allowed: %s.", [c.name, c.container.image, concat(", ", data.settings.images.allowed_prefixes)])
}

violation contains {"rule": "images/missing", "message": msg} if {
	some c in lib.containers
	not is_string(object.get(c.container, "image", null))
	msg := sprintf("Container %q has no image.", [c.name])
}

violation contains {"rule": "images/latest", "message": msg} if {
	not data.settings.images.allow_latest
	some c in lib.containers
	ref := normalize(c.container.image)
	floating(ref)
	msg := sprintf("Container %q uses image %q without a fixed tag (latest). Pin a version tag or a digest.", [c.name, c.container.image])
}

# entry_matches over the allowlist: an exact entry is the repository itself (an entry ending
# in "/" that equals it also starts it), a path entry starts it.
allowed(ref) if repository(ref) in data.settings.images.allowed_prefixes

allowed(ref) if {
	repo := repository(ref)
	some entry in data.settings.images.allowed_prefixes
	endswith(entry, "/")
	startswith(repo, entry)
}

entry_matches(entry, repo) if {
	endswith(entry, "/")
	startswith(repo, entry)
}

entry_matches(entry, repo) if {
	not endswith(entry, "/")
	repo == entry
}

# The repository of a normalized reference: without its digest and its tag (a tag is a
# ":" in the last path component; a ":" earlier is a registry port).
repository(ref) := repo if {
	no_digest := split(ref, "@")[0]
	parts := split(no_digest, "/")
	last := parts[count(parts) - 1]
	name := split(last, ":")[0]
	repo := concat("/", array.concat(array.slice(parts, 0, count(parts) - 1), [name]))
}

# Split off the registry: the first path component is a registry when it has a dot or a
# port, or is "localhost"; otherwise the reference is on Docker Hub.
normalize(image) := ref if {
	is_string(image)
	parts := split(image, "/")
	explicit_registry(parts[0])
	count(parts) > 1
	ref := image
} else := ref if {
	is_string(image)
	not contains(image, "/")
	ref := concat("", ["docker.io/library/", image])
} else := ref if {
	is_string(image)
	ref := concat("", ["docker.io/", image])
}

explicit_registry(first) if contains(first, ".")

explicit_registry(first) if contains(first, ":")

explicit_registry("localhost")

floating(ref) if {
	not contains(ref, "@")
	name := last_component(ref)
	not contains(name, ":")
}

floating(ref) if {
	not contains(ref, "@")
	endswith(last_component(ref), ":latest")
}

last_component(ref) := parts[count(parts) - 1] if parts := split(ref, "/")
