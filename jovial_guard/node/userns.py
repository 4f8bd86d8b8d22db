"""Whether this node can run pods with ``hostUsers: false``, as a node label.

The authoritative signal is the kubelet's: since Kubernetes 1.30 it asks the container
runtime which features each runtime handler has and reports them in the Node's status
(``status.runtimeHandlers[].features.userNamespaces``), and it refuses a ``hostUsers: false``
pod when the handler does not report support ("runtime does not support user namespaces").
Pods without a ``runtimeClassName`` use the default handler (the one named ``""``), so that
is the handler read here.

Two kernel conditions are checked beside it, because the runtime's answer does not cover
them: user namespaces enabled (``/proc/sys/user/max_user_namespaces`` above 0), and a kernel
of at least 6.3 (``status.nodeInfo.kernelVersion``), the first with idmapped mounts on tmpfs,
which the kubelet uses for service-account tokens, Secrets and ConfigMaps. Whether the
filesystem of the kubelet's pod directory supports idmapped mounts is not probed (it takes a
privileged ``mount_setattr`` on that filesystem); ext4, xfs, btrfs and overlayfs do on 6.3.

The result is the label ``jovial-guard.io/user-namespaces=true|false``, with the reason in
the annotation ``jovial-guard.io/user-namespaces-reason``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .labels import NodeLabels

LABEL = "jovial-guard.io/user-namespaces"
REASON_ANNOTATION = "jovial-guard.io/user-namespaces-reason"
MAX_USER_NAMESPACES = Path("/proc/sys/user/max_user_namespaces")
#: The first kernel with idmapped tmpfs mounts.
MIN_KERNEL = (6, 3)


@dataclass(frozen=True)
class Support:
    supported: bool
    reason: str


def runtime_support(node: Mapping[str, Any]) -> bool | None:
    """The default runtime handler's ``userNamespaces`` feature; None when the kubelet reports
    no handlers (older than 1.30, or a runtime that does not answer the question)."""
    handlers = (node.get("status") or {}).get("runtimeHandlers") or []
    default = next((h for h in handlers if isinstance(h, Mapping) and (h.get("name") or "") == ""), None)
    if default is None:
        return None
    return (default.get("features") or {}).get("userNamespaces") is True


def kernel_version(node: Mapping[str, Any]) -> tuple[int, int] | None:
    release = ((node.get("status") or {}).get("nodeInfo") or {}).get("kernelVersion") or ""
    match = re.match(r"(\d+)\.(\d+)", str(release))
    return (int(match[1]), int(match[2])) if match else None


def max_user_namespaces(path: Path = MAX_USER_NAMESPACES) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def detect(node: Mapping[str, Any], *, max_userns: int | None) -> Support:
    """Supported only when every condition holds; the reason names the first that fails."""
    runtime = runtime_support(node)
    if runtime is None:
        return Support(False, "the kubelet reports no runtime handlers (status.runtimeHandlers): "
                              "Kubernetes before 1.30 or a runtime that does not report features")
    if not runtime:
        return Support(False, "the default runtime handler does not report userNamespaces "
                              "(containerd 2.0+ with runc 1.2+ or crun 1.9+ does)")
    if max_userns is None:
        return Support(False, f"{MAX_USER_NAMESPACES} is unreadable: cannot tell whether user namespaces are enabled")
    if max_userns <= 0:
        return Support(False, f"user namespaces are disabled ({MAX_USER_NAMESPACES} is {max_userns})")
    kernel = kernel_version(node)
    if kernel is None or kernel < MIN_KERNEL:
        shown = "unknown" if kernel is None else f"{kernel[0]}.{kernel[1]}"
        return Support(False, f"kernel {shown} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]} "
                              "(no idmapped tmpfs mounts for the pods' tokens and Secrets)")
    return Support(True, f"runtime handler reports userNamespaces, max_user_namespaces={max_userns}, "
                         f"kernel {kernel[0]}.{kernel[1]}")


def labels_for(support: Support) -> tuple[dict[str, Any], dict[str, Any]]:
    """The label and annotation patches that record ``support`` on the node."""
    return {LABEL: "true" if support.supported else "false"}, {REASON_ANNOTATION: support.reason}


def label_node(labels: NodeLabels, *, max_userns_path: Path = MAX_USER_NAMESPACES) -> Support:
    """Detect from the node's own Node object and kernel, and patch the label when it changed."""
    node = labels.read()
    support = detect(node, max_userns=max_user_namespaces(max_userns_path))
    label, annotation = labels_for(support)
    metadata = node.get("metadata") or {}
    if (metadata.get("labels") or {}).get(LABEL) != label[LABEL] or \
            (metadata.get("annotations") or {}).get(REASON_ANNOTATION) != annotation[REASON_ANNOTATION]:
        labels.label(label, annotation)
    return support
