"""Regenerate the hostile-input vectors: `python tests/vectors/hostile/generate.py`.

Two sets, both described in ``index.json`` (what each vector is and what must happen):

* ``check/``: files for ``jovial-guard check``. Each names its documents' outcomes:
  ``decided`` (a real policy decision, allow or deny), ``denied`` (a policy denial with
  ``rule``), ``error`` (malformed: denied, exit 2, the message ``contains`` a phrase) or
  ``not-applicable``. A hostile document sits between ordinary ones, so the vectors also
  show that the rest of the batch is still decided.
* ``webhook/``: AdmissionReview request bodies. ``400`` means the envelope is refused with
  HTTP 400 (the message ``contains`` a phrase); ``denied`` means an in-band denial with
  ``rule``. Nothing here may ever be allowed.

Written byte for byte (several vectors are not valid UTF-8 or not valid JSON), so the
files are the contract; regenerate only after reading the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
IMAGE = "quay.io/jupyter/base-notebook:2024-05-27"

GOOD = f"kind: Pod\nmetadata: {{name: ok}}\nspec: {{containers: [{{name: c, image: '{IMAGE}'}}]}}\n".encode()
PRIVILEGED = (f"kind: Pod\nmetadata: {{name: priv}}\nspec: {{containers: [{{name: c, image: '{IMAGE}', "
              "securityContext: {privileged: true}}]}\n").encode()


def pod_with(security: str, *, pod_fields: str = "") -> bytes:
    """A pod whose one container has ``security`` (YAML flow text) as its securityContext."""
    extra = f", {pod_fields}" if pod_fields else ""
    return (f"kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: c, image: '{IMAGE}', "
            f"securityContext: {security}}}]{extra}}}\n").encode()


def stream(*docs: bytes) -> bytes:
    return b"---\n".join(docs)


def ok() -> dict[str, Any]:
    return {"outcome": "decided"}


def err(contains: str) -> dict[str, Any]:
    return {"outcome": "error", "contains": contains}


def denied(rule: str) -> dict[str, Any]:
    return {"outcome": "denied", "rule": rule}


def na(kind: str) -> dict[str, Any]:
    return {"outcome": "not-applicable", "kind": kind}


PRIV = denied("pod-security/privileged")


def deep_block(levels: int) -> bytes:
    return b"kind: Pod\nmetadata:\n" + b"".join(b"  " * (i + 1) + b"a:\n" for i in range(levels)) + b"  " * (levels + 1) + b"x: 1\n"


def billion_laughs() -> bytes:
    lines = [b'kind: Pod\nmetadata:\n  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 9):
        prev, cur = chr(ord("a") + n - 1).encode(), chr(ord("a") + n).encode()
        lines.append(b"  " + cur + b": &" + cur + b" [" + b",".join([b"*" + prev] * 9) + b"]")
    return b"\n".join(lines) + b"\n"


CHECK: dict[str, tuple[bytes, str, list[dict[str, Any]]]] = {
    "non-utf8-middle.yaml": (
        stream(GOOD, b"kind: Pod\nmetadata: {name: bad, annotations: {note: \"caf\xe9\"}}\n", PRIVILEGED),
        "Latin-1 bytes in the middle document of three", [ok(), err("not UTF-8"), PRIV]),
    "utf16.yaml": (GOOD.decode().encode("utf-16"), "a UTF-16 file (Kubernetes reads UTF-8 only)", [err("not UTF-8")]),
    "deep-flow.yaml": (stream(GOOD, b"kind: Pod\nmetadata: {a: " + b"[" * 10000 + b"]" * 10000 + b"}\n", PRIVILEGED),
                       "10000 nested flow lists between two pods", [ok(), err("nested deeper than"), PRIV]),
    "deep-block.yaml": (stream(deep_block(150), GOOD), "150 nested block maps", [err("nested deeper than"), ok()]),
    "deep.json": (b'{"kind": "Pod", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
                  "5000 nested JSON objects", [err("nested")]),
    "billion-laughs.yaml": (stream(billion_laughs(), GOOD), "9^9 expansion through aliases",
                            [err("aliases expand to more than"), ok()]),
    "recursive-alias.yaml": (stream(b"kind: Pod\nmetadata: &m {labels: *m}\n", GOOD), "an alias inside its own anchor",
                             [err("no complete anchor"), ok()]),
    "unquoted-date.yaml": (stream(
        b"kind: Pod\nmetadata: {name: d, annotations: {created: 2024-05-27}}\n"
        b"spec: {containers: [{name: c, image: 'quay.io/jupyter/base-notebook:2024-05-27'}]}\n",
        f"kind: Pod\nmetadata: {{name: t}}\nspec: {{containers: [{{name: c, image: '{IMAGE}', env: [{{name: T, value: 2024-05-27T10:00:00Z}}]}}]}}\n".encode(),
        GOOD), "unquoted dates (a string to Kubernetes, a date to PyYAML)",
        [err("unquoted date"), err("unquoted date"), ok()]),
    "privileged-y.yaml": (stream(pod_with("{privileged: y}"), pod_with("{privileged: Y}"), pod_with("{allowPrivilegeEscalation: n}"),
                                 pod_with("{}", pod_fields="hostNetwork: N"), GOOD),
                          "y/Y/n/N: booleans to Kubernetes' YAML 1.1 decoder, strings to PyYAML",
                          [err("'y'"), err("'Y'"), err("'n'"), err("'N'"), ok()]),
    "privileged-yes-on.yaml": (stream(pod_with("{privileged: yes}"), pod_with("{privileged: On}"),
                                      pod_with("{}", pod_fields="hostNetwork: on")),
                               "yes/On/on: booleans to both readers, so decided as true",
                               [PRIV, PRIV, denied("pod-security/host-namespaces")]),
    "bool-as-string.yaml": (stream(pod_with("{privileged: 'true'}"), pod_with("{}", pod_fields="hostPID: \"y\""),
                                   pod_with("{allowPrivilegeEscalation: 1}"), pod_with("{windowsOptions: {hostProcess: 'yes'}}"),
                                   GOOD),
                            "quoted or numeric values in boolean fields",
                            [err("privileged must be true or false"), err("hostPID must be true or false"),
                             err("allowPrivilegeEscalation must be true or false"), err("hostProcess must be true or false"), ok()]),
    "bool-as-string.json": (json.dumps({"kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": [
        {"name": "c", "image": IMAGE, "securityContext": {"privileged": "y"}}]}}).encode(),
        "JSON string in a boolean field", [err("privileged must be true or false")]),
    "duplicate-keys.yaml": (stream(pod_with("{privileged: false, privileged: true}"), GOOD),
                            "the same key twice (tools keep different ones)", [err("duplicate key 'privileged'"), ok()]),
    "merge-key.yaml": (stream(b"base: &b {privileged: true}\nkind: Pod\nspec:\n  containers:\n  - name: c\n"
                              b"    image: 'quay.io/jupyter/base-notebook:2024-05-27'\n    securityContext:\n      <<: *b\n"
                              b"      privileged: false\n", GOOD), "a merge key overridden locally", [err("merge key"), ok()]),
    "tags.yaml": (stream(b"kind: Pod\nmetadata: !!python/object/apply:os.system ['true']\n",
                         b"kind: Pod\nmetadata: {annotations: {x: !!binary aGVsbG8=}}\n",
                         b"kind: Pod\nmetadata: {labels: !!set {a, b}}\n", b"kind: !custom Pod\n", GOOD),
                  "YAML tags that build non-JSON values",
                  [err("tag"), err("tag"), err("tag"), err("tag"), ok()]),
    "numbers.yaml": (stream(pod_with("{runAsUser: 1e3}"), pod_with("{runAsUser: 08}"), pod_with("{runAsUser: 1:30}"),
                            pod_with("{runAsUser: 9223372036854775808}"), pod_with("{runAsUser: .nan}"), GOOD),
                     "numbers YAML readers disagree on, or that JSON cannot carry",
                     [err("'1e3'"), err("'08'"), err("'1:30'"), err("64 bits"), err("not a finite number"), ok()]),
    "non-string-keys.yaml": (stream(b"kind: Pod\nmetadata: {labels: {1: x}}\n", b"kind: Pod\nmetadata: {labels: {? [a] : b}}\n",
                                    b"kind: Pod\nmetadata: {labels: {on: x}}\n", GOOD),
                             "keys that are not strings", [err("not a string"), err("keys must be strings"), err("not a string"), ok()]),
    "control-chars.yaml": (stream(b"kind: Pod\nmetadata: {name: \"a\x07b\"}\n", GOOD), "a control character",
                           [err("invalid YAML"), ok()]),
    "lone-surrogate.json": (b'{"kind": "Pod", "metadata": {"name": "\\ud800"}}', "an unpaired surrogate escape", [err("not JSON")]),
    "huge-int.json": (b'{"kind": "Pod", "spec": {"securityContext": {"runAsUser": 9223372036854775808}}}',
                      "an integer past int64", [err("64 bits")]),
    "list.yaml": (b"apiVersion: v1\nkind: List\nitems:\n" + b"".join(b"- " + d.replace(b"\n", b"\n  ").rstrip() + b"\n" for d in (
        GOOD, b"kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n", PRIVILEGED)),
        "kubectl get -o yaml: a List of a pod, a Service and a privileged pod", [ok(), na("Service"), PRIV]),
    "podlist.json": (json.dumps({"apiVersion": "v1", "kind": "PodList", "items": [
        {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}},
        {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": IMAGE, "securityContext": {"privileged": True}}]}}]}).encode(),
        "the API's PodList, whose items carry no kind", [ok(), PRIV]),
    "multi-kind.yaml": (stream(b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
                               f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {{template: {{spec: {{containers: [{{name: c, image: '{IMAGE}'}}]}}}}}}\n".encode(),
                               b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
                               b"apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n"),
                        "a chart's worth of kinds", [na("Service"), ok(), na("ConfigMap"), na("Namespace")]),
    "nested-list.yaml": (b"kind: List\nitems:\n- kind: List\n  items: []\n- " + GOOD.replace(b"\n", b"\n  ").rstrip() + b"\n",
                         "a List inside a List", [err("List inside a List"), ok()]),
    "list-items-not-list.yaml": (stream(b"kind: List\nitems: {a: 1}\n", GOOD), "a List whose items are a map",
                                 [err("items must be a list"), ok()]),
    "bom.yaml": (b"\xef\xbb\xbf" + GOOD, "a UTF-8 byte order mark", [ok()]),
    "empty-documents.yaml": (b"---\n---\n# only a comment\n---\n...\n" + GOOD + b"...\n", "empty documents are skipped", [ok()]),
}


def review(obj: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "hostile-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": "CREATE", "namespace": "jhub", "userInfo": {"username": "mallory"}, "object": obj}}


def pod_json(security: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": IMAGE, "securityContext": security}], **spec}}


def readonly_mount_as_number() -> dict[str, Any]:
    pod = pod_json({}, volumes=[{"name": "v", "emptyDir": {}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v", "readOnly": 0}]
    return pod


def body(obj: Any) -> bytes:
    return json.dumps(review(obj)).encode()


WEBHOOK: dict[str, tuple[bytes, str, dict[str, Any]]] = {
    "non-utf8.json": (body(pod_json({})).replace(b'"name": "p"', b'"name": "caf\xe9"'), "a Latin-1 byte",
                      {"outcome": "400", "contains": "not UTF-8"}),
    "deep.json": (body(pod_json({})).replace(b'"securityContext": {}', b'"securityContext": ' + b'{"a": ' * 150 + b"1" + b"}" * 150),
                  "150 nested objects inside the pod", {"outcome": "400", "contains": "nested deeper than"}),
    "huge-int.json": (body(pod_json({"runAsUser": 2**63})), "an integer past int64", {"outcome": "400", "contains": "64 bits"}),
    "lone-surrogate.json": (body(pod_json({})).replace(b'"name": "p"', b'"name": "\\ud800"'), "an unpaired surrogate escape",
                            {"outcome": "400", "contains": "not JSON"}),
    "nan.json": (body(pod_json({})).replace(b'"securityContext": {}', b'"securityContext": {"runAsUser": NaN}'),
                 "a NaN literal", {"outcome": "400", "contains": "not JSON"}),
    "bom.json": (b"\xef\xbb\xbf" + body(pod_json({})), "a byte order mark", {"outcome": "400", "contains": "not JSON"}),
    "privileged-string.json": (body(pod_json({"privileged": "y"})), "a string where Kubernetes has a bool",
                               {"outcome": "denied", "rule": "malformed-input", "contains": "privileged must be true or false"}),
    "hostnetwork-string.json": (body(pod_json({}, hostNetwork="true")), "a string where Kubernetes has a bool",
                                {"outcome": "denied", "rule": "malformed-input", "contains": "hostNetwork must be true or false"}),
    "readonly-mount-int.json": (body(readonly_mount_as_number()), "a number where Kubernetes has a bool",
                                {"outcome": "denied", "rule": "malformed-input", "contains": "readOnly must be true or false"}),
}


def main() -> None:
    index: dict[str, Any] = {"check": {}, "webhook": {}}
    for directory, vectors in (("check", CHECK), ("webhook", WEBHOOK)):
        (HERE / directory).mkdir(exist_ok=True)
        for name, (data, why, expect) in vectors.items():
            (HERE / directory / name).write_bytes(data)
            index[directory][name] = {"why": why, "expect": expect}
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
