"""The node's user-namespace label from its Node object and kernel.

The vectors are Node objects the test node's kubelet v1.37.2 reported (containerd 2.4.2),
once with Debian's runc 1.1.5 (no ``features`` command: ``userNamespaces: false``) and once
with the project's runc v1.3.7 (``userNamespaces: true``); see tests/vectors/node/README.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.node import userns
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "node"


def vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text())  # type: ignore[no-any-return]


def test_the_kubelet_reports_support_with_the_projects_runc() -> None:
    node = vector("kubelet-1.37-project-runc")
    assert userns.runtime_support(node) is True
    support = userns.detect(node, max_userns=96365)
    assert support.supported, support.reason
    assert userns.labels_for(support)[0] == {userns.LABEL: "true"}


def test_debians_runc_is_no_support_whatever_the_kernel_says() -> None:
    node = vector("kubelet-1.37-debian-runc")
    support = userns.detect(node, max_userns=96365)
    assert not support.supported
    assert support.reason.startswith("the default runtime handler does not report userNamespaces")
    assert userns.labels_for(support) == ({userns.LABEL: "false"}, {userns.REASON_ANNOTATION: support.reason})


def test_only_the_default_handler_counts() -> None:
    """Pods without a runtimeClassName use the handler named "": another handler's support
    does not make the node's default one support it."""
    node = vector("kubelet-1.37-debian-runc")
    handlers = node["status"]["runtimeHandlers"]
    assert [h["name"] for h in handlers][0] == ""
    handlers.append({"name": "crun", "features": {"userNamespaces": True}})
    assert userns.runtime_support(node) is False
    handlers[0]["features"]["userNamespaces"] = True
    assert userns.runtime_support(node) is True


@pytest.mark.parametrize("max_userns, expected", [(0, "user namespaces are disabled"),
                                                  (None, "is unreadable: cannot tell")])
def test_the_kernel_must_allow_user_namespaces(max_userns: int | None, expected: str) -> None:
    support = userns.detect(vector("kubelet-1.37-project-runc"), max_userns=max_userns)
    assert not support.supported and expected in support.reason


@pytest.mark.parametrize("release, supported", [("6.2.16-generic", False), ("6.3.0", True), ("5.19.0", False),
                                                ("", False), ("6.18.44-fc-v669", True)])
def test_a_kernel_without_idmapped_tmpfs_is_no_support(release: str, supported: bool) -> None:
    node = copy.deepcopy(vector("kubelet-1.37-project-runc"))
    node["status"]["nodeInfo"]["kernelVersion"] = release
    support = userns.detect(node, max_userns=10)
    assert support.supported is supported, support.reason
    if not supported:
        assert "older than 6.3" in support.reason


def test_a_kubelet_that_reports_no_handlers_is_no_support() -> None:
    node = vector("kubelet-1.37-project-runc")
    del node["status"]["runtimeHandlers"]
    assert userns.runtime_support(node) is None
    assert "reports no runtime handlers" in userns.detect(node, max_userns=10).reason
    assert not userns.detect({}, max_userns=10).supported


def test_max_user_namespaces_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "max_user_namespaces"
    path.write_text("15000\n")
    assert userns.max_user_namespaces(path) == 15000
    path.write_text("x")
    assert userns.max_user_namespaces(path) is None
    assert userns.max_user_namespaces(tmp_path / "absent") is None


class FakeLabels:
    """Stands in for the API: the node it reads, the patches it receives."""

    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node
        self.patches: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def read(self) -> dict[str, Any]:
        return self.node

    def label(self, labels: dict[str, Any], annotations: dict[str, Any]) -> None:
        self.patches.append((labels, annotations))
        self.node["metadata"].setdefault("labels", {}).update(labels)
        self.node["metadata"].setdefault("annotations", {}).update(annotations)


def test_label_node_patches_only_when_the_answer_changes(tmp_path: Path) -> None:
    proc = tmp_path / "max_user_namespaces"
    proc.write_text("100\n")
    fake = FakeLabels(vector("kubelet-1.37-project-runc"))
    labels: Any = fake
    assert userns.label_node(labels, max_userns_path=proc).supported
    assert userns.label_node(labels, max_userns_path=proc).supported
    assert len(fake.patches) == 1 and fake.patches[0][0] == {userns.LABEL: "true"}
    proc.write_text("0\n")
    assert not userns.label_node(labels, max_userns_path=proc).supported
    assert fake.patches[-1][0] == {userns.LABEL: "false"} and len(fake.patches) == 2


def test_the_policy_selects_the_label_the_agent_sets() -> None:
    """With settings.node.user_namespaces on, the webhook adds hostUsers: false and this
    nodeSelector (policies/main.rego); it must name the agent's label and its true value."""
    node = json.loads((DEFAULT_POLICY_DIR / "data.json").read_text())["settings"]["node"]
    assert node["user_namespaces_selector"] == {userns.LABEL: "true"}
    assert node["user_namespaces"] is False
