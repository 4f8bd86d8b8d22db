"""The one naming of the project's network namespaces, used by everyone who looks one up.

Why one function: the spawn hook, the dashboard, the audit's network cut and the tests
must find the same namespace for a hub user. A user's namespace is ``PREFIX-u-KEY`` with
``KEY = namespace_key(user name)``: the name's lowercase ``[a-z0-9]`` characters plus a
digest of the *raw* hub user name, so ``alice@uni.edu`` and ``aliceunied.u`` never share a
namespace and every name fits the kernel's limits. Pure.
"""

from __future__ import annotations

import hashlib
import re

from .egress_core import EgressRuleInvalid

#: What :func:`namespace_key` (and a service name) may look like.
KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
#: What a namespace prefix (``c.JovialGuard.netns_prefix``) may look like.
PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
#: A per-user namespace name: ``PREFIX-u-KEY``.
USER_NETNS = re.compile(r"^[a-z][a-z0-9]{0,7}-u-[a-z0-9][a-z0-9-]{0,39}$")
_UNSAFE = re.compile(r"[^a-z0-9]")


def namespace_key(username: str) -> str:
    """``alice-1a2b3c4d``: readable, unique per raw hub user name, a valid :data:`KEY`."""
    if not username:
        raise EgressRuleInvalid("a namespace needs a user name")
    digest = hashlib.sha256(username.encode()).hexdigest()[:8]
    safe = _UNSAFE.sub("", username.lower())[:24]
    return f"{safe}-{digest}" if safe else digest


def user_netns(prefix: str, username: str) -> str:
    """The namespace of hub user ``username`` under ``prefix``: ``jg-u-alice-1a2b3c4d``."""
    return f"{check_prefix(prefix)}-u-{namespace_key(username)}"


def is_user_netns(name: str) -> bool:
    """Whether ``name`` is a per-user namespace (never the router or a service namespace)."""
    return bool(USER_NETNS.match(name))


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise EgressRuleInvalid(
            f"namespace name {key!r} must be lowercase letters, digits and '-' "
            "(at most 40); use namespace_key() for hub user names"
        )
    return key


def check_prefix(prefix: str) -> str:
    if not PREFIX.match(prefix):
        raise EgressRuleInvalid(f"prefix {prefix!r} must match {PREFIX.pattern}")
    return prefix
