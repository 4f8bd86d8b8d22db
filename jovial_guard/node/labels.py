"""The node's readiness label, set and removed through the Kubernetes API.

The label is what notebook pods select (``settings.node.notebook_selector`` in the policy
data), so it may only be present while the profiles are installed. The digest of the
installed set goes into an annotation, for operators and attestation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import Misconfigured, Unavailable

READY_LABEL = "jovial-guard.io/profiles-ready"
DIGEST_ANNOTATION = "jovial-guard.io/profiles-digest"


def api_client(kubeconfig: Path | None) -> Any:
    """A client from ``kubeconfig``, else the pod's in-cluster service account."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is not None:
            return config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except ConfigException as exc:
        raise Misconfigured(f"no Kubernetes API configuration ({exc}): run in a pod or give --kubeconfig") from None
    except (TypeError, ValueError, AttributeError, KeyError, OSError) as exc:
        # A file that is not a kubeconfig surfaces from the client as TypeError/AttributeError.
        raise Misconfigured(f"{kubeconfig} is not a usable kubeconfig ({exc!r})") from None


class NodeLabels:
    """Marks one node ready or not ready for notebooks."""

    def __init__(self, api: Any, node_name: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.node_name = node_name

    def _patch(self, labels: dict[str, Any], annotations: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.core.patch_node(self.node_name, {"metadata": {"labels": labels, "annotations": annotations}})
        except ApiException as exc:
            if exc.status == 404:
                raise Misconfigured(f"node {self.node_name!r} does not exist: check --node-name") from None
            raise Unavailable(f"the API server refused to label node {self.node_name!r}: {exc.status} {exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"the API server is unreachable: {exc}") from None

    def mark_ready(self, profiles_digest: str) -> None:
        self._patch({READY_LABEL: "true"}, {DIGEST_ANNOTATION: f"sha256:{profiles_digest}"})

    def mark_not_ready(self) -> None:
        """Remove the label (a merge patch with null deletes a key; absent keys are fine)."""
        self._patch({READY_LABEL: None}, {DIGEST_ANNOTATION: None})

    def annotate(self, annotations: dict[str, Any]) -> None:
        """Set (or, with None, remove) annotations on the node: the grant key, attestation."""
        self._patch({}, annotations)

    def read(self) -> dict[str, Any]:
        """The Node as the API returns it (raw JSON: fields newer than the client's models,
        such as ``status.runtimeHandlers``, are kept)."""
        import json

        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response: Any = self.core.read_node(self.node_name, _preload_content=False)
            node: Any = json.loads(response.data)
        except ApiException as exc:
            if exc.status == 404:
                raise Misconfigured(f"node {self.node_name!r} does not exist: check --node-name") from None
            raise Unavailable(f"the API server refused to read node {self.node_name!r}: {exc.status} {exc.reason}") from None
        except (HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"cannot read node {self.node_name!r} from the API server: {exc}") from None
        if not isinstance(node, dict):
            raise Unavailable(f"the API server returned no Node object for {self.node_name!r}")
        return node

    def label(self, labels: dict[str, Any], annotations: dict[str, Any]) -> None:
        """Set (or, with None, remove) other labels and annotations the agent owns."""
        self._patch(labels, annotations)

    def is_ready(self) -> bool:
        metadata = self.core.read_node(self.node_name).metadata
        return metadata is not None and (metadata.labels or {}).get(READY_LABEL) == "true"
