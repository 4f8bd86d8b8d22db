"""The webhook's storage record on a pod, and the spawner's reading of the webhook's refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jovial_guard.admission.records import (
    NOTEBOOK_ANNOTATION,
    STORAGE_ANNOTATION,
    StorageRecord,
    read_storage_record,
    record_ops,
)
from jovial_guard.decision import SecuritySpec
from jovial_guard.kube.spawner import policy_refusal

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SPEC = json.loads((VECTORS / "render_pod" / "bare_notebook.json").read_text())["spec"]
STAGED = {"fileset": "projects/astro", "mode": "ro", "mount_path": "/lustre/project", "node_stage": "/var/lib/jgn/staging/alice"}
RECORD = ('{"fileset":"projects/astro","gid":' + str(SPEC["gid"]) + ',"mode":"ro","mount_path":"/lustre/project",'
          '"uid":' + str(SPEC["uid"]) + ',"v":1}')
PATH = "/metadata/annotations/jovial-guard.io~1storage"


def spec(storage: dict[str, Any] | None, *, notebook: bool = True) -> SecuritySpec:
    return SecuritySpec.from_json({**SPEC, "storage": storage, "notebook": notebook})


MARK = {NOTEBOOK_ANNOTATION: "true"}
NPATH = "/metadata/annotations/jovial-guard.io~1notebook"


@pytest.mark.parametrize("metadata, storage, notebook, ops", [
    # A notebook with storage staged on the node: both records, however the pod came.
    ({"name": "p"}, STAGED, True,
     [{"op": "add", "path": "/metadata/annotations", "value": {**MARK, STORAGE_ANNOTATION: RECORD}}]),
    ({"annotations": {"a": "1"}}, STAGED, True,
     [{"op": "add", "path": NPATH, "value": "true"}, {"op": "add", "path": PATH, "value": RECORD}]),
    ({"annotations": {**MARK, STORAGE_ANNOTATION: RECORD}}, STAGED, True, []),
    ({"annotations": {"a": "1"}}, None, True, [{"op": "add", "path": NPATH, "value": "true"}]),
    # A creator's own records are replaced by the decided ones, or removed when there are none.
    ({"annotations": {**MARK, STORAGE_ANNOTATION: RECORD.replace("astro", "staff")}}, STAGED, True,
     [{"op": "add", "path": PATH, "value": RECORD}]),
    ({"annotations": {**MARK, STORAGE_ANNOTATION: RECORD}}, None, True, [{"op": "remove", "path": PATH}]),
    ({"annotations": {**MARK, STORAGE_ANNOTATION: RECORD}}, {**STAGED, "node_stage": None}, True,
     [{"op": "remove", "path": PATH}]),
    ({"annotations": {NOTEBOOK_ANNOTATION: "false"}}, None, True, [{"op": "add", "path": NPATH, "value": "true"}]),
    ({"annotations": {**MARK, STORAGE_ANNOTATION: RECORD}}, None, False,
     [{"op": "remove", "path": NPATH}, {"op": "remove", "path": PATH}]),
    # A platform pod: nothing to record, nothing added.
    ({"annotations": {"a": "1"}}, None, False, []),
    ({}, None, False, []),
])
def test_record_ops(metadata: dict[str, Any], storage: dict[str, Any] | None, notebook: bool,
                    ops: list[dict[str, Any]]) -> None:
    assert record_ops({"metadata": metadata, "spec": {}}, spec(storage, notebook=notebook), []) == ops


def test_record_ops_after_an_earlier_op_made_metadata() -> None:
    earlier = [{"op": "add", "path": "/metadata", "value": {"labels": {"x": "y"}}}]
    assert record_ops({"spec": {}}, spec(STAGED), earlier) == [
        {"op": "add", "path": "/metadata/annotations", "value": {**MARK, STORAGE_ANNOTATION: RECORD}}]
    assert record_ops({"spec": {}}, spec(STAGED), []) == [
        {"op": "add", "path": "/metadata", "value": {"annotations": {**MARK, STORAGE_ANNOTATION: RECORD}}}]


def test_the_record_reads_back() -> None:
    record = read_storage_record({"metadata": {"annotations": {STORAGE_ANNOTATION: RECORD}}})
    assert record == StorageRecord("projects/astro", "ro", "/lustre/project", SPEC["uid"], SPEC["gid"])
    assert read_storage_record({"metadata": {"annotations": None}}) is None


@pytest.mark.parametrize("text, message", [
    ("not json", "is not JSON"),
    ('{"v":2,"fileset":"a"}', "is not a version 1 storage record"),
    ('["v", 1]', "is not a version 1 storage record"),
    (RECORD.replace('"uid":1000', '"uid":"1000"'), "uid is missing or not a int"),
    (RECORD.replace('"uid":1000', '"uid":true'), "uid is missing or not a int"),
    (RECORD.replace('"mode":"ro",', ""), "mode is missing or not a str"),
])
def test_a_bad_record_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StorageRecord.from_annotation(text)


class Refused(Exception):
    def __init__(self, body: Any) -> None:
        super().__init__("refused")
        self.body = body


@pytest.mark.parametrize("exc, expected", [
    (Refused(json.dumps({"message": 'admission webhook "mutate.jovial-guard.io" denied the request: [x] no.'})), "[x] no."),
    (Refused(json.dumps({"message": 'admission webhook "other.example.org" denied the request: no'}).encode()), None),
    (Refused(b"<html>"), None),
    (Refused(json.dumps(["message"])), None),
    (Refused(json.dumps({"message": 7})), None),
    (TimeoutError("pod did not start"), None),
])
def test_policy_refusal(exc: BaseException, expected: str | None) -> None:
    assert policy_refusal(exc) == expected
