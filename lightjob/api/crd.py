"""Build the LightningJob CustomResourceDefinition from the pydantic models.

pydantic's own JSON schema uses $ref and anyOf-with-null, which a structural CRD schema
forbids, so this walks the models directly and emits exactly the OpenAPI subset the API
server accepts. Every field's description and default come from the model.
"""

from __future__ import annotations

import datetime as dt
import types
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lightjob.api import models

Schema = dict[str, Any]


def build_crd() -> dict[str, Any]:
    spec_schema = schema_for_model(models.LightningJobSpec)
    spec_schema["x-kubernetes-validations"] = [
        {"rule": rule.cel, "message": rule.message} for rule in models.SPEC_RULES
    ]
    for name, (rule, message) in models.FIELD_RULES.items():
        field = spec_schema["properties"][name]
        field["x-kubernetes-validations"] = [{"rule": rule, "message": message}]
    for dotted, message in models.IMMUTABLE_FIELDS.items():
        section, name = dotted.split(".")
        field = spec_schema["properties"][section]["properties"][name]
        field["x-kubernetes-validations"] = [{"rule": "self == oldSelf", "message": message}]

    version = {
        "name": models.VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": "A PyTorch training job run as a gang of pods wired for "
                "torch.distributed.",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": _metadata_schema(),
                    "spec": spec_schema,
                    # No defaults in status: only the operator writes it.
                    "status": schema_for_model(models.LightningJobStatus, defaults=False),
                },
            }
        },
        "subresources": {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.numNodes",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        "additionalPrinterColumns": PRINTER_COLUMNS,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{models.PLURAL}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": models.SHORT_NAMES,
                "categories": ["all"],
            },
            "versions": [version],
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Nodes",
        "type": "string",
        "jsonPath": ".status.nodes",
        "description": "ready/desired",
    },
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step"},
    {
        "name": "Loss",
        "type": "number",
        "jsonPath": ".status.progress.loss",
        "description": "The logged loss, else the first logged metric",
    },
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Preemptions", "type": "integer", "jsonPath": ".status.preemptions"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def prune(value: Any, schema: Schema, path: str) -> tuple[Any, list[str]]:
    """`value` without the fields `schema` does not declare, as the API server prunes
    them, and the paths of those fields. The operator reads a spec written under a newer
    CRD (another minor version) this way: what it does not know, it ignores."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return value, []
    if isinstance(value, dict) and "properties" in schema:
        kept, dropped = {}, []
        for key, item in value.items():
            if key not in schema["properties"]:
                dropped.append(f"{path}.{key}")
                continue
            kept[key], lost = prune(item, schema["properties"][key], f"{path}.{key}")
            dropped += lost
        return kept, dropped
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        kept, dropped = {}, []
        for key, item in value.items():
            kept[key], lost = prune(item, schema["additionalProperties"], f"{path}.{key}")
            dropped += lost
        return kept, dropped
    if isinstance(value, list) and "items" in schema:
        pairs = [prune(item, schema["items"], f"{path}[{i}]") for i, item in enumerate(value)]
        return [p[0] for p in pairs], [d for p in pairs for d in p[1]]
    return value, []


def _metadata_schema() -> Schema:
    # A structural schema may only restrict metadata.name (and generateName).
    name = models.ObjectMeta.model_fields["name"]
    return {"type": "object", "properties": {"name": {"type": "string", **_constraints(name)}}}


def schema_for_model(model: type[BaseModel], *, defaults: bool = True) -> Schema:
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        wire_name = field.alias or name
        prop = schema_for_annotation(field.annotation, defaults=defaults)
        prop.update(_constraints(field))
        if field.description:
            prop["description"] = field.description
        default = _default_of(field) if defaults else None
        if default is not None:
            prop["default"] = default
        properties[wire_name] = prop
        if field.is_required():
            required.append(wire_name)
    schema: Schema = {"type": "object", "properties": properties}
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    if required:
        schema["required"] = required
    return schema


def schema_for_annotation(annotation: Any, *, defaults: bool = True) -> Schema:
    origin, args = get_origin(annotation), get_args(annotation)
    if hasattr(annotation, "__metadata__"):  # Annotated[...] with validators
        return schema_for_annotation(annotation.__origin__, defaults=defaults)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return schema_for_annotation(members[0], defaults=defaults)
        return _int_or_string(members)
    if origin is Literal:
        return {"type": _json_type(type(args[0])), "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": schema_for_annotation(args[0], defaults=defaults)}
    if origin is dict:
        if args[1] is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {
            "type": "object",
            "additionalProperties": schema_for_annotation(args[1], defaults=defaults),
        }
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return schema_for_model(annotation, defaults=defaults)
    if annotation is dt.datetime:
        return {"type": "string", "format": "date-time"}
    return {"type": _json_type(annotation)}


def _int_or_string(members: list[Any]) -> Schema:
    # Structural schemas allow a union only as int-or-string, in exactly this shape.
    kinds: set[Any] = set()
    for member in members:
        if get_origin(member) is Literal:
            kinds.update(type(a) for a in get_args(member))
        else:
            kinds.add(member)
    if not kinds <= {int, float, str}:
        raise TypeError(f"no structural schema for a union of {members}")
    return {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }


def _json_type(python_type: Any) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if python_type not in names:
        raise TypeError(f"no CRD schema type for {python_type!r}")
    return names[python_type]


def _constraints(field: FieldInfo) -> Schema:
    out: Schema = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            out["minimum"] = item.gt
            out["exclusiveMinimum"] = True
        elif isinstance(item, annotated_types.Le):
            out["maximum"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            out["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out["maxLength"] = item.max_length
        elif getattr(item, "pattern", None):
            out["pattern"] = item.pattern
    return out


def _default_of(field: FieldInfo) -> Any:
    """The default worth showing in the CRD: scalars only.

    Empty lists, dicts and sub-objects are left out so the API server does not fill
    every stored object with empty structures.
    """
    default = field.get_default(call_default_factory=False)
    if default is None or field.default_factory is not None:
        return None
    if isinstance(default, bool | int | float | str):
        return default
    return None


def render_reference(crd: dict[str, Any]) -> str:
    """Markdown tables of every spec and status field, for docs/api.md."""
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    sections: list[str] = []
    _render_object("spec", root["spec"], sections)
    _render_object("status", root["status"], sections)
    return "\n".join(sections)


def _render_object(path: str, schema: Schema, sections: list[str]) -> None:
    rows = ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, Schema]] = []
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        item = prop.get("items", prop) if prop.get("type") == "array" else prop
        if "properties" in item:
            suffix = "[]" if prop.get("type") == "array" else ""
            nested.append((f"{path}.{name}{suffix}", item))
        default = (
            "required" if name in required else f"`{prop['default']}`" if "default" in prop else ""
        )
        description = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(prop)} | {default} | {description} |")
    sections.append(f"### `{path}`\n\n" + "\n".join(rows) + "\n")
    for child_path, child in nested:
        _render_object(child_path, child, sections)


def _type_name(prop: Schema) -> str:
    if prop.get("x-kubernetes-int-or-string"):
        return "int or string"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(prop['items'])}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type_name(prop['additionalProperties'])}"
    if prop.get("x-kubernetes-preserve-unknown-fields"):
        return "object (Kubernetes)"
    return str(prop.get("format", kind))
