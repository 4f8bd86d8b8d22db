# Enforcement modes: how each rule acts when it is violated, kept as data.
#
# Like Pod Security admission's enforce/warn/audit levels, Gatekeeper's enforcementAction
# and Kyverno's validationFailureAction, a rule can be rolled out without refusing
# anything yet:
#   enforce  the violation denies the workload (the default);
#   warn     the workload is admitted; the violation is shown as a warning;
#   audit    the workload is admitted; the violation is recorded (decision log, audit
#            annotations, metrics) but not shown;
#   off      the violation is ignored.
# data.settings.enforcement.modes maps a rule id ("images/latest") or a package wildcard
# ("images/*") to a mode; the exact id wins over the wildcard, and
# data.settings.enforcement.default applies to every other rule.
#
# A namespace overrides them with labels, the way PSA's labels do: `jovial-guard.io/mode`
# for every rule, `mode.jovial-guard.io/<package>` for one package and
# `mode.jovial-guard.io/<package>.<rule>` for one rule (a label name cannot hold "/"),
# the most specific label winning. Rules listed in data.settings.enforcement.locked
# (default: the identity rules, which keep users from speaking for one another) ignore
# namespace labels. Any value that is not a known mode counts as enforce.
package jovial_guard.enforcement

import data.jovial_guard.lib

modes := {"enforce", "warn", "audit", "off"}

settings := object.get(data.settings, "enforcement", {})

configured := object.get(settings, "modes", {})

default_mode := valid(object.get(settings, "default", "enforce"))

locked := object.get(settings, "locked", ["identity/*"])

namespace_labels := l if {
	l := lib.workload.namespace_labels
	is_object(l)
} else := {}

namespace_label := "jovial-guard.io/mode"

rule_label_prefix := "mode.jovial-guard.io/"

valid(m) := m if m in modes

else := "enforce"

package_of(rule) := split(rule, "/")[0]

matches(patterns, rule) if rule in patterns

matches(patterns, rule) if {
	some p in patterns
	endswith(p, "/*")
	startswith(rule, trim_suffix(p, "*"))
}

# The mode a namespace label sets for `rule`, the most specific label first.
namespace_mode(rule) := valid(v) if {
	v := namespace_labels[concat("", [rule_label_prefix, replace(rule, "/", ".")])]
} else := valid(v) if {
	v := namespace_labels[concat("", [rule_label_prefix, package_of(rule)])]
} else := valid(v) if {
	v := namespace_labels[namespace_label]
}

# The mode the policy data sets for `rule`: its own id, then its package's wildcard.
data_mode(rule) := valid(m) if {
	m := configured[rule]
} else := valid(m) if {
	m := configured[concat("", [package_of(rule), "/*"])]
} else := default_mode

# Neither namespace labels nor configured modes: every rule acts in the default mode.
default uniform := false

uniform if {
	count(namespace_labels) == 0
	count(configured) == 0
}

mode(rule) := default_mode if {
	uniform
} else := m if {
	not matches(locked, rule)
	m := namespace_mode(rule)
} else := data_mode(rule)

# Each violation with the mode it acts in; rules turned off are dropped. The mode is worked
# out once per rule id (several violations often share one).
moded(violations) := {{"rule": v.rule, "message": v.message, "mode": default_mode} |
	default_mode != "off"
	some v in violations
} if {
	uniform
} else := {{"rule": v.rule, "message": v.message, "mode": m} |
	modes := {rule: mode(rule) | some rule in {v.rule | some v in violations}}
	some v in violations
	m := modes[v.rule]
	m != "off"
}

acting(violations, wanted) := acting_moded(moded(violations), wanted)

# The same over violations already moded: a caller that needs several modes modes them once.
acting_moded(moded_violations, wanted) := {{"rule": v.rule, "message": v.message} |
	some v in moded_violations
	v.mode == wanted
}

# The strictest mode any violation acted in ("none" when nothing was violated), for the
# decision's record and the metrics.
strictest(violations) := strictest_moded(moded(violations))

strictest_moded(moded_violations) := "enforce" if {
	some v in moded_violations
	v.mode == "enforce"
} else := "warn" if {
	some v in moded_violations
	v.mode == "warn"
} else := "audit" if {
	some v in moded_violations
	v.mode == "audit"
} else := "none"
