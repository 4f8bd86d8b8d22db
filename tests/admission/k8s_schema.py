"""A strict JSON Schema for Kubernetes objects, derived from the generated ``kubernetes`` client.

The ``kubernetes`` Python package is generated from Kubernetes' own OpenAPI document
(k8s.io/api); version 37 matches Kubernetes 1.37, the kube-apiserver the end-to-end test
builds. Each model's ``openapi_types`` and ``attribute_map`` give field names and types;
the field declarations (pydantic) or the generated setters name the required fields. The schema rejects
unknown fields (like the API server's ``fieldValidation=Strict``) and wrong types. The
end-to-end test additionally dry-run creates every manifest on the real API server.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import jsonschema
from kubernetes import client

_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "object": {},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
    "bytes": {"type": "string"},
}


def _type_schema(type_name: str, defs: dict[str, Any]) -> dict[str, Any]:
    if type_name in _PRIMITIVES:
        return dict(_PRIMITIVES[type_name])
    lowered = type_name[:5].lower()
    if lowered == "list[" and type_name.endswith("]"):
        return {"type": "array", "items": _type_schema(type_name[5:-1], defs)}
    if lowered == "dict[" and type_name.endswith("]") or lowered == "dict(" and type_name.endswith(")"):
        value_type = type_name[5:-1].split(",", 1)[1].strip()
        return {"type": "object", "additionalProperties": _type_schema(value_type, defs)}
    _model_def(type_name, defs)
    return {"$ref": f"#/$defs/{type_name}"}


def _model_def(name: str, defs: dict[str, Any]) -> None:
    if name in defs:
        return
    model = getattr(client.models, name, None)
    if model is None:
        raise KeyError(f"kubernetes client has no model {name}")
    defs[name] = {}  # reserve (recursive types such as JSONSchemaProps)
    fields = getattr(model, "model_fields", None)
    if fields:  # pydantic models (kubernetes >= 35): the field declarations say what is required
        required = sorted(model.attribute_map[a] for a, f in fields.items() if f.is_required() and a in model.attribute_map)
    else:
        required = sorted({model.attribute_map[a] for a in _REQUIRED.findall(inspect.getsource(model)) if a in model.attribute_map})
    properties = {model.attribute_map[attr]: _type_schema(t, defs) for attr, t in model.openapi_types.items()}
    defs[name] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        defs[name]["required"] = required


def model_name(api_version: str, kind: str) -> str:
    version = api_version.rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + kind


@functools.cache
def schema_for(api_version: str, kind: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    name = model_name(api_version, kind)
    _model_def(name, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"#/$defs/{name}", "$defs": defs}


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of ``doc`` (an object with apiVersion and kind)."""
    schema = schema_for(doc["apiVersion"], doc["kind"])
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
