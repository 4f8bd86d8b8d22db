# Egress: default deny; DNS, the hub, and the allowlists of the user's groups.
#
# Cloud metadata and private ranges stay blocked unless a group's allowlist names a
# destination inside them explicitly.
package jovial_guard.egress

import data.jovial_guard.lib

rules contains rule if {
	some g in lib.groups
	some rule in object.get(data.settings.egress.groups, g, [])
}

# Deterministic order, so the same groups always render the same nftables rules.
allow := [r | some key in sort({rule_key(x) | some x in rules}); some r in rules; rule_key(r) == key]

rule_key(r) := sprintf("%s|%v|%s", [r.cidr, object.get(r, "ports", []), object.get(r, "protocol", "tcp")])

spec := {
	"allow": allow,
	"dns": data.settings.egress.dns,
	"hub": data.settings.egress.hub,
	"blocked": data.settings.egress.blocked,
}
