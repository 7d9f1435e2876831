"""JSON Schema validation that reports every problem as (path, message) in words a user can act on."""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

from snaptastic_boot.errors import ValidationFailed


@cache
def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("snaptastic_boot.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for key in ref[2:].split("/"):
            node = node[key]
        return _resolve(node, root)
    return schema


def _message(error: Any, root: dict[str, Any]) -> tuple[str, str]:
    path = _path(error.absolute_path)
    kind = error.validator
    schema = _resolve(error.schema, root) if isinstance(error.schema, dict) else {}
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        key = missing[0] if missing else str(error.validator_value)
        return (f"{path}.{key}" if path else key, "missing")
    if kind == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = [k for k in error.instance if k not in allowed]
        key = extra[0] if extra else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
        return (f"{path}.{key}" if path else key, f"unknown key{hint}")
    if "x-hint" in schema and kind in ("pattern", "minLength", "maxLength", "type"):
        return (path, str(schema["x-hint"]))
    if kind == "type":
        want = error.validator_value
        return (path, f"must be of type {want if isinstance(want, str) else ' or '.join(want)}, not {type(error.instance).__name__}")
    if kind == "enum":
        return (path, f"must be one of {', '.join(map(str, error.validator_value))}")
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return (path, f"must be {word} {error.validator_value}")
    if kind == "minItems":
        return (path, f"needs at least {error.validator_value} item(s)")
    if kind == "pattern" and "description" in schema:
        return (path, str(schema["description"]))
    return (path, error.message)


def validate(instance: Any, schema: dict[str, Any], source: str) -> None:
    """Raise ValidationFailed listing every problem, sorted by path, or return quietly."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    problems = sorted({_message(e, schema) for e in validator.iter_errors(instance)})
    if problems:
        raise ValidationFailed(source, problems)
