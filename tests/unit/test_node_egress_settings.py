"""The node agent's egress settings: the same ruleset the embedded mode renders, from the same
policy data the NetworkPolicies come from, and the grant key's wire form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jovial_guard.decision import EgressRule
from jovial_guard.errors import Misconfigured
from jovial_guard.hardening.egress_core import egress_from_settings
from jovial_guard.hardening.egress_nft import render_nft_ruleset
from jovial_guard.node import grant_channel
from jovial_guard.node.egress import EgressSettings

DATA = Path(__file__).resolve().parents[2] / "policies" / "data.json"


def settings() -> EgressSettings:
    return EgressSettings.load(DATA, hub=["10.214.9.1/32"], hub_ports=[8081], ingress_from=[], notebook_port=8888)


def test_ruleset_is_the_embedded_renderers_for_the_labelled_groups() -> None:
    section = json.loads(DATA.read_text())["settings"]["egress"]
    hub = (EgressRule(cidr="10.214.9.1/32", ports=(8081,), comment="hub API"),)
    expected = render_nft_ruleset(egress_from_settings(section, groups=("*", "astro")), hub=hub,
                                  inbound_from=("10.214.9.1/32",), notebook_port=8888)
    assert settings().ruleset({"egress.jovial-guard.io/astro": "allow", "component": "singleuser-server"}) == expected
    # A label that does not say "allow", or a group no setting names, opens nothing.
    plain = settings().ruleset({})
    assert settings().ruleset({"egress.jovial-guard.io/astro": "deny"}) == plain
    assert settings().ruleset({"egress.jovial-guard.io/nosuchgroup": "allow"}) == plain
    assert "10.213.250.0/24" in expected and "10.213.250.0/24" not in plain


def test_notebooks_are_recognised_by_the_networkpolicies_selector() -> None:
    s = settings()
    assert s.is_notebook({"component": "singleuser-server", "x": "y"})
    assert not s.is_notebook({"component": "hub"}) and not s.is_notebook({})


def test_a_pod_the_webhook_recorded_as_a_notebook_is_one_whatever_its_labels() -> None:
    """A notebook only by name or claims (no component label): the webhook's record counts."""
    s = settings()
    assert s.is_notebook({}, {"jovial-guard.io/notebook": "true"})
    assert s.is_notebook({"component": "singleuser-server"}, {"jovial-guard.io/notebook": "false"})
    assert not s.is_notebook({"app": "x"}, {"jovial-guard.io/notebook": "false"})
    assert not s.is_notebook({"app": "x"}, {"jovial-guard.io/notebook": "True"}) and not s.is_notebook({}, None)


def test_bad_policy_data_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text('{"settings": {}}')
    with pytest.raises(Misconfigured, match="no settings.egress"):
        EgressSettings.load(tmp_path / "data.json", hub=[], hub_ports=[8081], ingress_from=[], notebook_port=8888)
    doc = json.loads(DATA.read_text())
    doc["settings"]["egress"]["groups"]["astro"] = [{"cidr": "not-a-cidr"}]
    (tmp_path / "data.json").write_text(json.dumps(doc))
    with pytest.raises(Misconfigured, match="not-a-cidr"):
        EgressSettings.load(tmp_path / "data.json", hub=[], hub_ports=[8081], ingress_from=[], notebook_port=8888)


def test_grant_key_round_trips_and_garbage_is_refused() -> None:
    key = X25519PrivateKey.generate().public_key()
    assert grant_channel.decode_key(grant_channel.encode_key(key)) == key
    for bad in ("", "!!", "AAAA"):
        with pytest.raises(Misconfigured, match="grant-key"):
            grant_channel.decode_key(bad)


def test_the_plugin_is_chained_last_once_and_kept_there(tmp_path: Path) -> None:
    from jovial_guard.node import cni_conflist

    wanted = cni_conflist.entry(socket=Path("/run/jg/egress.sock"), namespaces=["jhub"])
    path = tmp_path / "10-calico.conflist"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network",
                                "plugins": [{"type": "calico"}, {"type": "portmap"}]}))
    assert cni_conflist.ensure_chained(path, wanted) is True
    assert json.loads(path.read_text())["plugins"] == [{"type": "calico"}, {"type": "portmap"}, wanted]
    assert cni_conflist.ensure_chained(path, wanted) is False
    # A stale entry (another socket) in the middle is replaced by the wanted one, last.
    stale = {**wanted, "socket": "/old.sock"}
    path.write_text(json.dumps({"plugins": [{"type": "bridge"}, stale, {"type": "bandwidth"}]}))
    assert cni_conflist.ensure_chained(path, wanted) is True
    assert json.loads(path.read_text())["plugins"] == [{"type": "bridge"}, {"type": "bandwidth"}, wanted]
    for bad in ({"type": "bridge"}, {"plugins": []}, {"plugins": [wanted]}):
        path.write_text(json.dumps(bad))
        with pytest.raises(Misconfigured, match="conflist"):
            cni_conflist.ensure_chained(path, wanted)
    path.write_text("{not json")
    with pytest.raises(Misconfigured, match="cannot read the CNI conflist"):
        cni_conflist.ensure_chained(path, wanted)
