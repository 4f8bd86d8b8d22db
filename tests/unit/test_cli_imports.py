"""The commands the webhook image runs import neither JupyterHub nor the spawners.

Each case runs in a fresh interpreter (a module imported by an earlier test would hide an
import), invokes the command through click and the modules its real run imports, then
lists the hub-only packages in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HUB_ONLY = ("jupyterhub", "dockerspawner", "kubespawner", "docker", "traitlets", "kubernetes", "kubernetes_asyncio", "tornado")

PROBE = """
import importlib, json, sys
from click.testing import CliRunner
from jovial_guard.cli import main
args, modules = json.loads(sys.argv[1])
result = CliRunner().invoke(main, args)
for name in modules:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"exit": result.exit_code, "output": result.output[-500:], "hub": loaded}))
"""


@pytest.mark.parametrize(
    "args, modules",
    [
        (["--help"], []),
        (["webhook", "serve", "--help"], ["jovial_guard.admission.server", "jovial_guard.admission.handler"]),
        (["webhook", "prepare-policies", "--help"], ["jovial_guard.admission.policy_overlay"]),
        (["webhook", "wait-ready", "--help"], ["jovial_guard.admission.cluster_hooks"]),
        (["check", "--help"], ["jovial_guard.policy.check", "jovial_guard.policy.opa_process", "jovial_guard.policy.client"]),
    ],
    ids=lambda v: " ".join(v) if v and isinstance(v[0], str) and not v[0].startswith("jovial") else None,
)
def test_webhook_commands_do_not_import_the_hub(args: list[str], modules: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([args, modules]), json.dumps(HUB_ONLY)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["exit"] == 0, result["output"]
    assert result["hub"] == []


def test_the_probe_sees_a_hub_import() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([["--help"], ["jovial_guard.spawn.spawner"]]), json.dumps(HUB_ONLY)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "dockerspawner" in json.loads(proc.stdout)["hub"]


def test_the_webhook_extra_names_no_hub_package() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    webhook = [*project["dependencies"], *project["optional-dependencies"]["webhook"]]
    names = {r.split("==")[0].lower().replace("_", "-") for r in webhook}
    # The sync kubernetes client is the webhook's own (namespace mode labels, bundle
    # publishing, PolicyReports, node labels); everything the hub alone needs stays out.
    assert not names & {"jupyterhub", "dockerspawner", "jupyterhub-kubespawner", "kubernetes-asyncio", "traitlets", "docker"}
    assert all("==" in r for r in webhook)  # pinned exactly


#: What the node agent's image (images/node-agent/) leaves out: it has the base dependencies,
#: kubernetes and pyroute2 only.
NODE_AGENT_ABSENT = ("jupyterhub", "dockerspawner", "kubespawner", "docker", "traitlets", "kubernetes_asyncio",
                     "tornado", "uvloop", "opa_client", "prometheus_client", "rich")
NODE_AGENT_MODULES = ["jovial_guard.node.cli", "jovial_guard.node.egress", "jovial_guard.node.grants",
                      "jovial_guard.node.attest", "jovial_guard.node.cni_conflist", "jovial_guard.hardening.nft_lib"]


def test_node_agent_imports_only_what_its_image_has() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([["node-agent", "--help"], NODE_AGENT_MODULES]),
                           json.dumps(NODE_AGENT_ABSENT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["exit"] == 0, result["output"]
    assert result["hub"] == []


def test_node_agent_image_requirements_are_the_pyproject_pins() -> None:
    """images/webhook/requirements.py picks single pins from extras for the node agent's image."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "images" / "webhook" / "requirements.py"
    picked = subprocess.run([sys.executable, str(script), "webhook:kubernetes", "hub:pyroute2"],
                            capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert "kubernetes==37.0.2" in picked and "pyroute2==0.9.7" in picked
    assert not any(r.split("==")[0].lower() in ("aiohttp", "uvloop", "jupyterhub", "docker") for r in picked), picked
    whole = subprocess.run([sys.executable, str(script), "webhook"], capture_output=True, text=True, timeout=30,
                           check=True).stdout.split()
    assert "uvloop==0.23.0" in whole and "pyroute2==0.9.7" not in whole
    wrong = subprocess.run([sys.executable, str(script), "hub:nothing"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0 and "does not pin 'nothing'" in wrong.stderr
