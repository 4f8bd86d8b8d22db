"""A digest of the nftables ruleset *as the kernel holds it* in a project network namespace.

Why the kernel's listing and not the rendered text: ``nft`` reformats what it loads, so the
only comparable form is what ``nft -j list ruleset`` returns. The digest is taken once right
after a namespace's rules are loaded (it goes into the hardening record) and again by every
attestation; anything that changes the rules (a flush, a rule added, a table replaced)
changes it. Counter values and rule handles are dropped first: they change as traffic flows
or rules are reloaded without changing what is enforced.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import orjson

from . import netns, nft_lib
from .netns import EgressSetupFailed

#: The first field of every digest: a new canonical form gets a new version.
VERSION = "v1"


class RulesetUnreadable(EgressSetupFailed):
    """``nft -j list ruleset`` did not answer with the JSON nftables schema."""


def _canonical(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "handle":
                continue
            if key == "counter" and isinstance(value, dict):
                out[key] = None
                continue
            out[key] = _canonical(value)
        return out
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return node


def digest_listing(listing: str | bytes) -> str:
    """``v1:sha256:HEX`` of a JSON listing (pure). Raises RulesetUnreadable on other input."""
    try:
        doc = orjson.loads(listing)
        items = doc["nftables"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RulesetUnreadable(f"nft -j list ruleset gave no nftables JSON: {exc}") from None
    if not isinstance(items, list):
        raise RulesetUnreadable("nft -j list ruleset: 'nftables' is not a list")
    kept = [_canonical(item) for item in items if not (isinstance(item, dict) and "metainfo" in item)]
    body = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    return f"{VERSION}:sha256:{hashlib.sha256(body).hexdigest()}"


#: The table the audit service's ``cut_network`` response loads (jovial_guard.audit.netcut).
CUT_TABLE = "jovial_guard_cut"


def is_cut(listing: str | bytes) -> bool:
    """Whether a JSON listing is exactly the response's drop-all ruleset: one ``inet``
    table named :data:`CUT_TABLE`, every chain's policy ``drop``, no rule at all."""
    try:
        items = orjson.loads(listing)["nftables"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    tables = [i["table"] for i in items if isinstance(i, dict) and "table" in i]
    chains = [i["chain"] for i in items if isinstance(i, dict) and "chain" in i]
    rules = [i for i in items if isinstance(i, dict) and not ({"metainfo", "table", "chain"} & i.keys())]
    return (len(tables) == 1 and tables[0].get("family") == "inet" and tables[0].get("name") == CUT_TABLE
            and bool(chains) and all(c.get("policy") == "drop" for c in chains) and not rules)


def live_listing(name: str) -> str:
    """``nft -j list ruleset`` inside project namespace ``name`` (never the host's)."""
    if not name or not netns.exists(name):
        raise EgressSetupFailed(f"network namespace {name!r} does not exist")
    if os.stat(netns.path_of(name)).st_ino == os.stat("/proc/self/ns/net").st_ino:
        raise EgressSetupFailed(f"network namespace {name!r} is the host's own; its ruleset is not read")
    try:
        return netns.in_netns(name, nft_lib.list_ruleset_json)
    except nft_lib.NftablesUnavailable as exc:
        raise EgressSetupFailed(f"read the ruleset of network namespace {name}: {exc}") from exc


def live_digest(name: str) -> str:
    """The digest of the ruleset loaded in project namespace ``name``."""
    return digest_listing(live_listing(name))


#: The digest of a namespace with no rules at all (what a flush leaves).
EMPTY_DIGEST = digest_listing(b'{"nftables": []}')
