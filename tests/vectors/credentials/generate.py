#!/usr/bin/env python3
"""Regenerate the credentials test vectors: ``python3 tests/vectors/credentials/generate.py``.

Envelopes are deterministic (fixed KEKs, DEKs, nonces through the injected randomness), so
regenerating them gives byte-identical files. Delivery vectors are not: HPKE draws its
ephemeral key inside ``cryptography``; regenerated ones differ but stay valid.

Every "invalid" vector must be refused with InvalidGrant (no detail); every "refused"
vector is authentic but must be refused with the named, non-crypto reason.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jovial_guard.credentials.delivery import seal_for_agent
from jovial_guard.credentials.envelope import seal_with
from jovial_guard.credentials.grant import Grant, canonical_json
from jovial_guard.credentials.keyring import LocalFileKeyring

HERE = Path(__file__).resolve().parent
K1 = bytes(range(32))
K2 = bytes(range(32, 64))
NOW = 1_764_230_400  # 2025-11-27T08:00:00Z


def counter_bytes(seed: int):
    """Deterministic 'randomness': the bytes seed, seed+1, ... (vectors only!)."""
    counter = itertools.count(seed)

    def randbytes(n: int) -> bytes:
        return bytes(next(counter) % 256 for _ in range(n))

    return randbytes


def keyring(tmp: Path, *, active: str, seed: int) -> LocalFileKeyring:
    path = tmp / f"kek-{active}-{seed}.json"
    doc = {
        "version": 1,
        "active": active,
        "keys": {
            "k1": {"created": NOW - 86400, "key": base64.b64encode(K1).decode()},
            "k2": {"created": NOW, "key": base64.b64encode(K2).decode()},
        },
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return LocalFileKeyring(path, randbytes=counter_bytes(seed))


def grant(**over: object) -> Grant:
    fields: dict[str, object] = dict(
        user="alice",
        uid=1000,
        gid=100,
        fileset="home/alice",
        mode="rw",
        mount_path="/lustre/home",
        nodemap="jg-alice",
        issued=NOW,
        expires=NOW + 28800,
        serial="00112233445566778899aabbccddeeff",
        secret=bytes(range(100, 132)),
    )
    fields.update(over)
    return Grant(**fields)  # type: ignore[arg-type]


def grant_json(g: Grant) -> dict[str, object]:
    return {**g.public_json(), "secret": base64.b64encode(g.secret).decode()}


def flip(blob: bytes, index: int) -> bytes:
    out = bytearray(blob)
    out[index] ^= 0x01
    return bytes(out)


def split(blob: bytes) -> tuple[bytes, bytes, bytes]:
    (hlen,) = struct.unpack_from(">H", blob, 1)
    header = blob[3 : 3 + hlen]
    (wlen,) = struct.unpack_from(">H", blob, 3 + hlen)
    return header, blob[5 + hlen : 5 + hlen + wlen], blob[5 + hlen + wlen :]


def rebuild(header: bytes, wrapped: bytes, rest: bytes) -> bytes:
    return b"\x01" + struct.pack(">H", len(header)) + header + struct.pack(">H", len(wrapped)) + wrapped + rest


def envelopes(tmp: Path) -> dict[str, object]:
    ring1 = keyring(tmp, active="k1", seed=1)
    ring2 = keyring(tmp, active="k2", seed=2)
    alice = grant()
    alice_ro = grant(mode="ro", serial="ffeeddccbbaa99887766554433221100", secret=bytes(range(140, 172)))
    bob = grant(
        user="bob",
        fileset="home/bob",
        nodemap="jg-bob",
        serial="0123456789abcdef0123456789abcdef",
        secret=bytes(range(180, 212)),
    )
    e_alice = seal_with(alice, keyring=ring1, dek=bytes(range(200, 232)), nonce=bytes(12))
    e_alice_ro = seal_with(alice_ro, keyring=ring2, dek=bytes(range(1, 33)), nonce=bytes(range(12)))
    e_bob = seal_with(bob, keyring=ring1, dek=bytes(range(50, 82)), nonce=bytes(range(1, 13)))
    header, wrapped, rest = split(e_alice)
    header_doc = json.loads(header)
    forged_user = canonical_json({**header_doc, "user": "bob"})
    forged_fileset = canonical_json({**header_doc, "fileset": "home/bob"})
    forged_expiry = canonical_json({**header_doc, "expires": header_doc["expires"] + 86400})
    forged_key = canonical_json({**header_doc, "key_id": "k2"})
    unknown_key = canonical_json({**header_doc, "key_id": "k9"})
    spaced = json.dumps(header_doc, sort_keys=True).encode()  # same content, not canonical
    _, bob_wrapped, _ = split(e_bob)
    invalid = {
        "flipped bit in the version byte": flip(e_alice, 0),
        "flipped bit in the header": flip(e_alice, 10),
        "flipped bit in the wrapped data key": flip(e_alice, 5 + len(header) + 20),
        "flipped bit in the nonce": flip(e_alice, 5 + len(header) + len(wrapped) + 3),
        "flipped bit in the ciphertext": flip(e_alice, len(e_alice) - 20),
        "flipped bit in the tag": flip(e_alice, len(e_alice) - 1),
        "truncated by one byte": e_alice[:-1],
        "truncated header": e_alice[:40],
        "empty": b"",
        "header rewritten for another user": rebuild(forged_user, wrapped, rest),
        "header rewritten for another fileset": rebuild(forged_fileset, wrapped, rest),
        "expiry extended in the header": rebuild(forged_expiry, wrapped, rest),
        "key id swapped": rebuild(forged_key, wrapped, rest),
        "unknown key id": rebuild(unknown_key, wrapped, rest),
        "non-canonical header": rebuild(spaced, wrapped, rest),
        "data key transplanted from another grant": rebuild(header, bob_wrapped, rest),
        "version 2": b"\x02" + e_alice[1:],
    }
    return {
        "about": "Grant envelopes (jovial_guard.credentials.envelope). keyring: the KEKs; valid: must open to "
        "'grant'; invalid: must raise InvalidGrant. Generated by generate.py.",
        "now": NOW,
        "keyring": {
            "version": 1,
            "active": "k2",
            "keys": {
                "k1": {"created": NOW - 86400, "key": base64.b64encode(K1).decode()},
                "k2": {"created": NOW, "key": base64.b64encode(K2).decode()},
            },
        },
        "valid": [
            {"name": "alice rw under k1", "envelope": e_alice.hex(), "grant": grant_json(alice), "key_id": "k1"},
            {"name": "alice ro under k2", "envelope": e_alice_ro.hex(), "grant": grant_json(alice_ro), "key_id": "k2"},
            {"name": "bob rw under k1", "envelope": e_bob.hex(), "grant": grant_json(bob), "key_id": "k1"},
        ],
        "refused": [
            {
                "name": "alice's grant presented by bob",
                "envelope": e_alice.hex(),
                "user": "bob",
                "fileset": "home/alice",
                "now": NOW + 60,
                "error": "GrantWrongUser",
            },
            {
                "name": "alice's grant presented for bob's fileset",
                "envelope": e_alice.hex(),
                "user": "alice",
                "fileset": "home/bob",
                "now": NOW + 60,
                "error": "GrantWrongFileset",
            },
            {
                "name": "alice's grant after expiry",
                "envelope": e_alice.hex(),
                "user": "alice",
                "fileset": "home/alice",
                "now": NOW + 28800,
                "error": "GrantExpired",
            },
        ],
        "invalid": [{"name": name, "envelope": blob.hex()} for name, blob in invalid.items()],
    }


def deliveries() -> dict[str, object]:
    agent = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    other_agent = X25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
    issuer = Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35)))
    impostor = Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36)))
    g = grant()
    good = seal_for_agent(g, signer=issuer, agent_key=agent.public_key(), agent_id="node-1")

    def raw(key: X25519PrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        ).hex()

    return {
        "about": "Grants sealed to a node agent (jovial_guard.credentials.delivery). valid: opens with agent_key, "
        "agent_id, issuer_public; invalid: must raise InvalidGrant. Generated by generate.py (HPKE is "
        "randomized: regenerated files differ but stay valid).",
        "agent_key": raw(agent),
        "agent_id": "node-1",
        "issuer_public": issuer.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex(),
        "valid": [{"name": "alice for node-1", "sealed": good.hex(), "grant": grant_json(g)}],
        "invalid": [
            {"name": "flipped bit in the encapsulated key", "sealed": flip(good, 5).hex()},
            {"name": "flipped bit in the ciphertext", "sealed": flip(good, len(good) - 30).hex()},
            {"name": "flipped bit in the tag", "sealed": flip(good, len(good) - 1).hex()},
            {"name": "version 2", "sealed": (b"\x02" + good[1:]).hex()},
            {
                "name": "sealed for another agent",
                "sealed": seal_for_agent(g, signer=issuer, agent_key=other_agent.public_key(), agent_id="node-1").hex(),
            },
            {
                "name": "sealed for another agent id",
                "sealed": seal_for_agent(g, signer=issuer, agent_key=agent.public_key(), agent_id="node-2").hex(),
            },
            {
                "name": "signed by an impostor issuer",
                "sealed": seal_for_agent(g, signer=impostor, agent_key=agent.public_key(), agent_id="node-1").hex(),
            },
            {"name": "truncated", "sealed": good[:40].hex()},
        ],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (HERE / "envelopes.json").write_text(json.dumps(envelopes(Path(tmp)), indent=1) + "\n")
    (HERE / "delivery.json").write_text(json.dumps(deliveries(), indent=1) + "\n")
    print(f"wrote {HERE}/envelopes.json and delivery.json")


if __name__ == "__main__":
    main()
