# Many decisions in one query: `jovial-guard check` over many documents.
#
# Entry point: data.jovial_guard.batch.decisions for input.batch = [item, ...], where each
# item is an input document data.jovial_guard.main.decision reads ({"workload": ...}).
# The answer is an object from the item's index to data.jovial_guard.main.decision with
# that item as input: the very same rule, nothing decided here. An item whose decision is
# undefined has no key; the caller denies it (fail closed).
package jovial_guard.batch

import data.jovial_guard.main

decisions := {i: d |
	some i, item in input.batch
	d := main.decision with input as item
}
