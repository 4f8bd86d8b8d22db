"""Helm post-renderer: what the single-node test cluster lacks, filled into the rendered chart.

Run by ``helm --post-renderer`` (``node_chart.post_renderer``) as
``python node_post_render.py CHANGES.json``: the rendered objects on stdin, the changed ones
on stdout. ``CHANGES.json`` maps ``Kind/name`` to what that object's pod template gains:

* ``hostAliases``: names that cluster DNS would resolve (a Service's DNS name, pointed at the
  host's relay that stands in for kube-proxy);
* ``env``: ``{container: {NAME: value}}``, e.g. the API server's address in
  ``KUBERNETES_SERVICE_HOST``/``PORT`` for a pod that calls it.

Nothing else changes. A change naming an object or container the chart did not render is an
error: the chart moved on and the test must follow, rather than silently test less.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def apply_changes(docs: list[dict[str, Any]], changes: dict[str, Any]) -> list[dict[str, Any]]:
    """``docs`` with ``changes`` applied (the documents are changed in place and returned)."""
    pending = dict(changes)
    for doc in docs:
        wanted = pending.pop(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", None)
        if wanted is None:
            continue
        spec = doc["spec"]["template"]["spec"]
        if "hostAliases" in wanted:
            spec["hostAliases"] = [*spec.get("hostAliases", []), *wanted["hostAliases"]]
        for name, env in wanted.get("env", {}).items():
            containers = [c for c in spec["containers"] if c["name"] == name]
            if not containers:
                raise SystemExit(f"node_post_render: {doc['kind']}/{doc['metadata']['name']} has no container {name}")
            containers[0]["env"] = [*containers[0].get("env", []), *({"name": k, "value": v} for k, v in env.items())]
    if pending:
        raise SystemExit(f"node_post_render: the chart rendered no {', '.join(sorted(pending))}")
    return docs


def main() -> None:
    changes = json.loads(Path(sys.argv[1]).read_text())
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    yaml.safe_dump_all(apply_changes(docs, changes), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
