"""AdmissionReview envelope parsing and response building (pure functions)."""

from __future__ import annotations

import base64
import json

import pytest

from jovial_guard.admission.review import (
    MalformedReview,
    build_response,
    clean_warning,
    encode_patch,
    parse_review,
)

GOOD = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-1"}}


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"", "empty"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (json.dumps({**GOOD, "apiVersion": "admission.k8s.io/v1beta1"}).encode(), "admission.k8s.io/v1"),
        (json.dumps({**GOOD, "kind": "Pod"}).encode(), "AdmissionReview"),
        (json.dumps({**GOOD, "request": None}).encode(), "request"),
        (json.dumps({**GOOD, "request": {"uid": ""}}).encode(), "uid"),
        (json.dumps({**GOOD, "request": {"uid": 7}}).encode(), "uid"),
        (json.dumps({**GOOD, "request": {"uid": "x" * 500}}).encode(), "uid"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_malformed_envelopes_are_named(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedReview) as err:
        parse_review(body)
    assert problem in str(err.value)


def test_good_envelope_returns_uid() -> None:
    review, uid = parse_review(json.dumps(GOOD).encode())
    assert uid == "u-1" and review["request"]["uid"] == "u-1"


def test_allow_with_patch_and_annotations() -> None:
    ops = [{"op": "add", "path": "/spec/securityContext", "value": {"runAsNonRoot": True}}]
    doc = build_response(
        "u-1", allowed=True, patch_b64=encode_patch(ops), warnings=["w\x00\n" + "x" * 400],
        audit_annotations={"policy-revision": "sha256:1"},
    )
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    response = doc["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == ops
    assert response["auditAnnotations"] == {"policy-revision": "sha256:1"}
    (warning,) = response["warnings"]
    assert warning.startswith("w??") and len(warning) <= 240


def test_denial_has_status_and_no_patch() -> None:
    doc = build_response("u-2", allowed=False, code=403, message="[rule] no", reason="Forbidden")
    assert doc["response"]["status"] == {"code": 403, "message": "[rule] no", "reason": "Forbidden", "status": "Failure"}
    assert "patch" not in doc["response"]
    with pytest.raises(ValueError):
        build_response("u-2", allowed=False, patch_b64="W10=")


@pytest.mark.parametrize("allowed", ["true", 1, None, "false"])
def test_allowed_must_be_a_real_bool(allowed: object) -> None:
    with pytest.raises(TypeError):
        build_response("u", allowed=allowed)  # type: ignore[arg-type]


def test_clean_warning_keeps_printable_text() -> None:
    assert clean_warning("container \"nb\" ok") == "container \"nb\" ok"


def test_cli_certs_makes_a_ca_and_rotates_only_the_serving_pair(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner
    from cryptography import x509

    from jovial_guard.cli import main

    runner = CliRunner()
    first = runner.invoke(main, ["webhook", "certs", str(tmp_path), "--namespace", "jovial-guard", "--ip", "127.0.0.1"])
    assert first.exit_code == 0, first.output
    ca1 = (tmp_path / "ca.crt").read_bytes()
    cert1 = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "jovial-guard-webhook.jovial-guard.svc" in sans.get_values_for_type(x509.DNSName)
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"
    second = runner.invoke(main, ["webhook", "certs", str(tmp_path)])
    assert second.exit_code == 0
    assert (tmp_path / "ca.crt").read_bytes() == ca1
    cert2 = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert cert2.serial_number != cert1.serial_number
    ca = x509.load_pem_x509_certificate(ca1)
    cert2.verify_directly_issued_by(ca)


def test_cli_netpol_prints_the_rendered_policies() -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from jovial_guard.cli import main

    data = Path(__file__).resolve().parents[2] / "policies" / "data.json"
    result = CliRunner().invoke(main, ["webhook", "netpol", "--data", str(data), "--namespace", "hub2"])
    assert result.exit_code == 0, result.output
    assert "kind: NetworkPolicy" in result.output and "namespace: hub2" in result.output
