"""The credentials test vectors (tests/vectors/credentials/), loaded by one helper.

Valid envelopes must open to exactly the recorded grant; invalid ones must raise
InvalidGrant whose message says nothing but "invalid grant"; refused ones are authentic
and must raise the named, non-cryptographic refusal.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jovial_guard.credentials import errors
from jovial_guard.credentials.delivery import open_delivery
from jovial_guard.credentials.envelope import open_envelope
from jovial_guard.credentials.issuer import Issuer
from jovial_guard.credentials.keyring import LocalFileKeyring
from jovial_guard.credentials.revocation import RevocationList
from jovial_guard.credentials.store import GrantStore

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "credentials"


def load_vectors(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]


ENVELOPES = load_vectors("envelopes.json")
DELIVERY = load_vectors("delivery.json")


@pytest.fixture
def keyring(tmp_path: Path) -> LocalFileKeyring:
    path = tmp_path / "kek.json"
    path.write_text(json.dumps(ENVELOPES["keyring"]))
    path.chmod(0o600)
    return LocalFileKeyring(path)


def _grant_doc(grant: Any) -> dict[str, Any]:
    return {**grant.public_json(), "secret": base64.b64encode(grant.secret).decode()}


@pytest.mark.parametrize("vector", ENVELOPES["valid"], ids=lambda v: v["name"])
def test_valid_envelopes_open(vector: dict[str, Any], keyring: LocalFileKeyring) -> None:
    grant = open_envelope(bytes.fromhex(vector["envelope"]), keyring=keyring)
    assert _grant_doc(grant) == vector["grant"]


@pytest.mark.parametrize("vector", ENVELOPES["invalid"], ids=lambda v: v["name"])
def test_invalid_envelopes_are_refused_without_detail(vector: dict[str, Any], keyring: LocalFileKeyring) -> None:
    with pytest.raises(errors.InvalidGrant) as info:
        open_envelope(bytes.fromhex(vector["envelope"]), keyring=keyring)
    assert str(info.value) == "invalid grant"


@pytest.mark.parametrize("vector", ENVELOPES["refused"], ids=lambda v: v["name"])
def test_authentic_grants_refused_with_reason(
    vector: dict[str, Any], keyring: LocalFileKeyring, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    issuer = Issuer(
        keyring=keyring,
        store=GrantStore(tmp_path / "grants"),
        revocations=RevocationList(tmp_path / "revoked.json"),
        signer=Ed25519PrivateKey.generate(),
    )
    with pytest.raises(getattr(errors, vector["error"])) as info:
        issuer.verify_at(
            bytes.fromhex(vector["envelope"]), now=vector["now"], user=vector["user"], fileset=vector["fileset"]
        )
    assert "00112233445566778899aabbccddeeff" in str(info.value)


def test_envelopes_match_their_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("credentials_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(json.dumps(module.envelopes(tmp_path))) == ENVELOPES


def _delivery_keys() -> tuple[X25519PrivateKey, Ed25519PublicKey]:
    return (
        X25519PrivateKey.from_private_bytes(bytes.fromhex(DELIVERY["agent_key"])),
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(DELIVERY["issuer_public"])),
    )


@pytest.mark.parametrize("vector", DELIVERY["valid"], ids=lambda v: v["name"])
def test_valid_deliveries_open(vector: dict[str, Any]) -> None:
    agent_key, issuer_key = _delivery_keys()
    grant = open_delivery(
        bytes.fromhex(vector["sealed"]), agent_key=agent_key, agent_id=DELIVERY["agent_id"], issuer_key=issuer_key
    )
    assert _grant_doc(grant) == vector["grant"]


@pytest.mark.parametrize("vector", DELIVERY["invalid"], ids=lambda v: v["name"])
def test_invalid_deliveries_are_refused_without_detail(vector: dict[str, Any]) -> None:
    agent_key, issuer_key = _delivery_keys()
    with pytest.raises(errors.InvalidGrant) as info:
        open_delivery(
            bytes.fromhex(vector["sealed"]), agent_key=agent_key, agent_id=DELIVERY["agent_id"], issuer_key=issuer_key
        )
    assert str(info.value) == "invalid grant"
