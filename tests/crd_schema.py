"""A structural schema, as the API server applies it to a custom resource: pruning what it
does not declare, defaulting, and CEL rules (x-kubernetes-validations) at every level."""

from __future__ import annotations

import copy
from typing import Any

import celpy

MISSING = object()  # no old value at this path (a create, or a field just added)


def prune(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Drop (in place) what the schema does not declare; the paths dropped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    dropped: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key in list(value):
            if key not in schema["properties"]:
                dropped.append(f"{path}.{key}")
                del value[key]
            else:
                dropped += prune(value[key], schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            dropped += prune(item, schema["additionalProperties"], f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            dropped += prune(item, schema["items"], f"{path}[{i}]")
    return dropped


def default(value: Any, schema: dict[str, Any]) -> None:
    """Fill in (in place) the schema's defaults, in objects that exist: a default inside
    an absent object is not applied, as on the API server."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                default(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "properties" not in schema:
            for item in value.values():
                default(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            default(item, schema["items"])


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), "null"
    )


class CelRules:
    """Every x-kubernetes-validations rule of a schema, compiled once."""

    def __init__(self) -> None:
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def problems(self, schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
        """The x-kubernetes-validations failed at this node and below, as the API server
        words them."""
        problems = []
        for rule in schema.get("x-kubernetes-validations") or []:
            uses_old = "oldSelf" in rule["rule"]
            if uses_old and old is MISSING:
                continue  # a transition rule needs the old value
            if rule["rule"] not in self._programs:
                self._programs[rule["rule"]] = self._env.program(self._env.compile(rule["rule"]))
            activation = {"self": celpy.json_to_cel(value)}
            if uses_old:
                activation["oldSelf"] = celpy.json_to_cel(old)
            try:
                result = self._programs[rule["rule"]].evaluate(activation)
                holds = not isinstance(result, Exception) and bool(result)
            except Exception:
                holds = False
            if not holds:
                kind = json_type(value)
                message = rule.get("message") or f"failed rule: {rule['rule']}"
                problems.append(f'{path}: Invalid value: "{kind}": {message}')
        if isinstance(value, dict):
            for key, sub in (schema.get("properties") or {}).items():
                if key in value:
                    before = old.get(key, MISSING) if isinstance(old, dict) else MISSING
                    problems += self.problems(sub, value[key], before, f"{path}.{key}")
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    before = old.get(key, MISSING) if isinstance(old, dict) else MISSING
                    problems += self.problems(extra, item, before, f"{path}[{key}]")
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems += self.problems(schema["items"], item, MISSING, f"{path}[{i}]")
        return problems
