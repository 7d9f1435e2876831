"""Userdata: a JSON object, given plain, gzip-compressed, or as one part of a MIME multi-part archive.

The multi-part form is how cloud-init users combine a `#cloud-config` part with our JSON part. Parsing and
validation are pure functions over bytes; errors name the field and how to fix it. Values other than the
identity keys may be secrets and are never logged.
"""

from __future__ import annotations

import copy
import email
import email.policy
import gzip
import json
import zlib
from collections.abc import Iterable
from typing import Any

from snaptastic_boot import messages
from snaptastic_boot.config.validation import load_schema, validate
from snaptastic_boot.errors import UserdataError
from snaptastic_boot.tags import IDENTITY_KEYS

# EC2 caps userdata at 16 KiB; a compressed part may expand, but not without bound.
MAX_DECOMPRESSED = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"


def parse(raw: bytes | str | None) -> dict[str, Any]:
    """Find the JSON object in raw userdata; raise UserdataError saying what is wrong."""
    if raw is None:
        raise UserdataError(messages.USERDATA_MISSING)
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    data = _gunzip(data) if data[:2] == GZIP_MAGIC else data
    if _looks_like_mime(data):
        return _from_mime(data)
    return _json_object(data, "userdata")


def validate_keys(data: dict[str, Any], required: Iterable[str] = IDENTITY_KEYS) -> None:
    """Check that the keys a snapshotter filters on are present and tag-safe."""
    schema = copy.deepcopy(load_schema("userdata.schema.json"))
    keys = list(dict.fromkeys(required))
    schema["required"] = keys
    schema["properties"] = {k: {"$ref": "#/definitions/tagValue"} for k in keys}
    validate(data, schema, "userdata")


def redacted(data: dict[str, Any], keep: Iterable[str] = IDENTITY_KEYS) -> dict[str, Any]:
    shown = set(keep)
    return {k: (v if k in shown else "<redacted>") for k, v in data.items()}


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED)
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise UserdataError(messages.userdata_gzip_corrupt(exc)) from exc
    if inflater.unconsumed_tail:
        raise UserdataError(messages.userdata_too_big(MAX_DECOMPRESSED // 1024))
    if not inflater.eof:
        raise UserdataError(messages.USERDATA_GZIP_TRUNCATED)
    return out


def _looks_like_mime(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"content-type:", b"mime-version:"))


def _from_mime(data: bytes) -> dict[str, Any]:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if not message.is_multipart():
        payload = message.get_payload(decode=True) or b""
        return _json_object(_maybe_gunzip(payload), "userdata")
    found: list[dict[str, Any]] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = _maybe_gunzip(part.get_payload(decode=True) or b"")
        ctype = part.get_content_type()
        if ctype in ("application/json", "text/json", "text/x-snaptastic-json") or payload.lstrip()[:1] == b"{":
            try:
                found.append(_json_object(payload, "userdata"))
            except UserdataError:
                if ctype in ("application/json", "text/json", "text/x-snaptastic-json"):
                    raise
    if not found:
        raise UserdataError(messages.USERDATA_NO_JSON_PART)
    if len(found) > 1:
        raise UserdataError(messages.USERDATA_TWO_JSON_PARTS)
    return found[0]


def _maybe_gunzip(data: bytes) -> bytes:
    return _gunzip(data) if data[:2] == GZIP_MAGIC else data


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserdataError(messages.not_utf8(where)) from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserdataError(messages.not_json(where, exc.msg, exc.lineno, exc.colno)) from exc
    if not isinstance(value, dict):
        raise UserdataError(messages.not_an_object(where, type(value).__name__))
    return value
