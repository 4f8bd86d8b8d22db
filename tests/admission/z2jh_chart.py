"""zero-to-jupyterhub's real chart, rendered by a real helm, as test input.

* :func:`render` runs ``helm template`` on the upstream chart in ``tests/vectors/z2jh/``
  (helm v3.22.0 from ``scripts/test.d/60-helm.sh``);
* :func:`hub_config` runs the chart's own ``jupyterhub_config.py`` against the rendered
  Secret and ConfigMap, exactly as the hub pod would read them from its mounts, and returns
  the traitlets Config it builds;
* :func:`notebook_pod` builds the pod KubeSpawner's ``make_pod`` makes from that Config for
  a user and profile, with the chart's ``modify_pod_hook`` applied as KubeSpawner applies it.

Two things of the hub's runtime are stood in for: the mounted files (read from the
rendered objects instead of ``/usr/local/etc/jupyterhub``) and tornado's curl HTTP client
(``pycurl`` is not installed; the client is never used offline).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from jovial_guard.policy.opa_process import REPO_ROOT

from .kubespawner_pods import _dummy_kubeconfig

CHART = REPO_ROOT / "tests" / "vectors" / "z2jh" / "jupyterhub"
HUB_FILES = CHART / "files" / "hub"
KUBE_VERSION = "v1.37.2"
HELM_VERSION = "v3.22.0"
NAMESPACE = "jhub"
RELEASE = "jhub"
#: Values files rendered by the tests: z2jh's defaults, the project's shipped values
#: (profileList + the hook), and automatic HTTPS (the autohttps Deployment).
RENDERINGS: dict[str, list[str]] = {
    "defaults": [],
    "jovial-guard-values": ["-f", str(REPO_ROOT / "deploy" / "zero-to-jupyterhub" / "values.yaml")],
    "autohttps": ["--set", "proxy.https.enabled=true", "--set", "proxy.https.hosts={hub.example.org}",
                  "--set", "proxy.https.letsencrypt.contactEmail=admin@example.org"],
}


def find_helm() -> str | None:
    """The cached helm build, or None (the caller skips, naming the set-up script)."""
    cache = Path(os.environ.get("JOVIAL_GUARD_CACHE", Path.home() / ".cache" / "jovial_guard"))
    for candidate in (REPO_ROOT / ".tools" / "bin" / "helm", cache / "tools" / "helm" / HELM_VERSION / "helm"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def render(helm: str, name: str, *extra: str) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders for one of :data:`RENDERINGS` (``extra``: more
    helm arguments, e.g. a further values file)."""
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
         *RENDERINGS[name], *extra],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def hub_config(docs: list[dict[str, Any]]) -> Any:
    """The traitlets Config the chart's jupyterhub_config.py builds from the rendered objects."""
    from tornado.httpclient import AsyncHTTPClient
    from traitlets.config import Config

    secret = _named(docs, "Secret", "hub")
    configmap = _named(docs, "ConfigMap", "hub")
    secret_data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    values = yaml.safe_load(secret_data["values.yaml"])

    spec = importlib.util.spec_from_file_location("z2jh", HUB_FILES / "z2jh.py")
    assert spec is not None and spec.loader is not None
    z2jh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z2jh)
    z2jh._load_config = lambda: values
    z2jh._get_config_value = lambda key: configmap["data"][key]
    z2jh.get_secret_value = lambda key, default=None: secret_data.get(key, default)

    config = Config()
    env = {"POD_NAMESPACE": NAMESPACE, "HUB_SERVICE_HOST": "10.0.0.1", "HUB_SERVICE_PORT": "8081",
           "PROXY_API_SERVICE_HOST": "10.0.0.2", "PROXY_API_SERVICE_PORT": "8001",
           "PROXY_PUBLIC_SERVICE_HOST": "10.0.0.3", "PROXY_PUBLIC_SERVICE_PORT": "80"}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_module = sys.modules.get("z2jh")
    saved_configure = AsyncHTTPClient.__dict__["configure"]
    os.environ.update(env)
    sys.modules["z2jh"] = z2jh
    AsyncHTTPClient.configure = classmethod(lambda cls, *a, **k: None)  # type: ignore[method-assign,assignment]
    try:
        path = HUB_FILES / "jupyterhub_config.py"
        exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: config, "__file__": str(path), "__name__": "__config__"})  # noqa: S102 - upstream's config, test input
    finally:
        AsyncHTTPClient.configure = saved_configure  # type: ignore[method-assign]
        if saved_module is None:
            sys.modules.pop("z2jh", None)
        else:
            sys.modules["z2jh"] = saved_module
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return config


async def notebook_pod(config: Any, *, username: str, groups: tuple[str, ...] = (), profile: str | None = None) -> dict[str, Any]:
    """The configured spawner's (KubeSpawner's) pod for ``username`` under the chart's hub config, as JSON."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner
    from traitlets.utils.importstring import import_item

    user = SimpleNamespace(name=username, id=abs(hash(username)) % 10_000, url=f"/user/{username}/",
                           groups=[SimpleNamespace(name=g) for g in groups])
    configured = config.JupyterHub.get("spawner_class", KubeSpawner) if "JupyterHub" in config else KubeSpawner
    spawner_class = import_item(configured) if isinstance(configured, str) else configured
    with _dummy_kubeconfig():
        spawner = spawner_class(_mock=True, user=user, config=config)
        if profile is not None:
            spawner.user_options = {"profile": profile}
            await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        if spawner.modify_pod_hook is not None:
            pod = spawner.modify_pod_hook(spawner, pod)
    client = ApiClient()
    try:
        doc: dict[str, Any] = client.sanitize_for_serialization(pod)
    finally:
        await client.close()
    return doc


def pod_from_template(obj: dict[str, Any], path: str) -> dict[str, Any]:
    """The Pod a controller creates from ``obj``'s template (owner reference included)."""
    template: Any = obj
    for part in [p for p in path.split("/") if p]:
        template = template[part]
    metadata = dict(template.get("metadata") or {})
    metadata["name"] = f"{obj['metadata']['name']}-x1"
    metadata["namespace"] = NAMESPACE
    metadata["ownerReferences"] = [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
                                    "uid": "00000000-0000-0000-0000-000000000001", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
