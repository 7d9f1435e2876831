"""JSON Schema validation that reports every problem as (path, message) in words a user can act on."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator
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


def ecma_pattern(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262, where `$` matches only at the very end; Python's `$` also matches
    before a final newline, so "solr\\n" would pass `^...$`. `\\Z` is the ECMA meaning."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    import jsonschema

    if validator.is_type(instance, "string") and not re.search(ecma_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _non_finite(instance: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[str, str]]:
    """NaN and infinity: Python's json accepts them and Python settings can hold them, but no bound stops them."""
    if isinstance(instance, float) and not math.isfinite(instance):
        yield (_path(path), f"must be a finite number, not {instance}")
    elif isinstance(instance, dict):
        for key, value in instance.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(instance, list):
        for i, value in enumerate(instance):
            yield from _non_finite(value, (*path, i))


@cache
def _validator_class(draft: str) -> Any:
    import jsonschema

    base = jsonschema.validators.validator_for({"$schema": draft})
    return jsonschema.validators.extend(base, {"pattern": _pattern})


def validate(instance: Any, schema: dict[str, Any], source: str) -> None:
    """Raise ValidationFailed listing every problem, sorted by path, or return quietly."""
    validator = _validator_class(str(schema.get("$schema", "")))(schema)
    problems = sorted({*(_message(e, schema) for e in validator.iter_errors(instance)), *_non_finite(instance)})
    if problems:
        raise ValidationFailed(source, problems)
