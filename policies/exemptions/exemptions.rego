# Exemptions: named, scoped, reasoned exceptions to individual rules, kept as data.
#
# Like Pod Security admission's exemptions and Kyverno's PolicyExceptions, an exemption
# never turns a rule off globally. Each entry in data.settings.exemptions says which rule
# ids it lifts ("rules", "pod-security/*" for a whole package) and for which workloads:
# namespaces, a label selector (matchLabels on the pod), images (allowlist entries, matched
# at registry/repository boundaries; every container must match), requesting users or
# service accounts. A scope field left out matches anything; "rules", "id" and "reason"
# are required. An optional "expires" (RFC 3339) ends it; a malformed one never applies.
# Every exemption used is reported in the decision, so it reaches the decision log and
# the API server's audit annotations.
package jovial_guard.exemptions

import data.jovial_guard.images
import data.jovial_guard.lib

entries := object.get(data.settings, "exemptions", [])

# The exemptions that lift `rule` for this workload.
applying(rule) := {e |
	some e in entries
	well_formed(e)
	rule_matches(e.rules, rule)
	in_scope(e)
	live(e)
}

well_formed(e) if {
	is_string(e.id)
	is_string(e.reason)
	e.reason != ""
	is_array(e.rules)
}

rule_matches(rules, rule) if rule in rules

rule_matches(rules, rule) if {
	some r in rules
	endswith(r, "/*")
	startswith(rule, trim_suffix(r, "*"))
}

in_scope(e) if {
	namespace_matches(e)
	selector_matches(e)
	images_match(e)
	requester_matches(e)
}

namespace_matches(e) if not e.namespaces

namespace_matches(e) if lib.workload.namespace in e.namespaces

selector_matches(e) if not e.selector

selector_matches(e) if {
	is_object(e.selector)
	every key, value in e.selector {
		lib.labels[key] == value
	}
}

images_match(e) if not e.images

images_match(e) if {
	is_array(e.images)
	every c in lib.containers {
		some entry in e.images
		images.entry_matches(entry, images.repository(images.normalize(c.container.image)))
	}
}

requester_matches(e) if not e.request_users

requester_matches(e) if lib.workload.request_user in e.request_users

live(e) if not "expires" in object.keys(e)

live(e) if {
	is_string(e.expires)
	regex.match(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`, e.expires)
	time.parse_rfc3339_ns(e.expires) > time.now_ns()
}

# The violations left after exemptions, and the exemptions used (for the record).
remaining(violations) := violations if {
	count(entries) == 0
} else := {v |
	some v in violations
	count(applying(v.rule)) == 0
}

used(violations) := set() if {
	count(entries) == 0
} else := {{"id": e.id, "rule": v.rule, "reason": e.reason, "expires": object.get(e, "expires", null)} |
	some v in violations
	some e in applying(v.rule)
}
