"""Structured JSON logs: one parseable object per line with the caller's fields."""

from __future__ import annotations

import json
import logging

from jovial_guard.admission.handler import HandlerResult
from jovial_guard.admission.server import log_decision
from jovial_guard.jsonlog import FORMAT_VERSION, JsonFormatter


def record(msg: str, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("jovial_guard.x", logging.INFO, __file__, 1, msg, (), None)
    rec.fields = fields  # type: ignore[attr-defined]
    return rec


def test_formatter_writes_versioned_json_with_fields() -> None:
    line = JsonFormatter().format(record("denied %s", decision_id="abc", revision="sha256:1"))
    doc = json.loads(line)
    assert doc["v"] == FORMAT_VERSION and doc["level"] == "info" and doc["logger"] == "jovial_guard.x"
    assert doc["decision_id"] == "abc" and doc["revision"] == "sha256:1"
    assert doc["time"].endswith("Z") and "\n" not in line


def test_fields_cannot_overwrite_the_envelope() -> None:
    doc = json.loads(JsonFormatter().format(record("m", message="forged", level="debug")))
    assert doc["message"] == "m" and doc["level"] == "info"


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_each_answered_review_is_logged_with_decision_id_revision_and_uid(caplog: object) -> None:
    result = HandlerResult(
        200, {}, "allowed", mode="warn", operation="CREATE", kind="Pod", namespace="jhub",
        request_uid="u-1", decision_id="d-1", revision="sha256:2", violations=(("warn", "images/latest"),),
    )
    logger = logging.getLogger("jovial_guard.admission.server")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_decision("mutate", result)
        log_decision("mutate", HandlerResult(200, {}, "allowed"))  # clean allow: DEBUG only
    finally:
        logger.removeHandler(handler)
    assert len(captured) == 1
    doc = json.loads(JsonFormatter().format(captured[0]))
    assert (doc["request_uid"], doc["decision_id"], doc["revision"], doc["mode"]) == ("u-1", "d-1", "sha256:2", "warn")
    assert doc["violations"] == [{"mode": "warn", "rule": "images/latest"}]
