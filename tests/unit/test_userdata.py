from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snaptastic_boot.config import userdata
from snaptastic_boot.errors import EXIT_BAD_INPUT, BadInput
from tests.mime import mime

GOOD = {"role": "solr", "cluster": "solr-prod", "environment": "production"}




def test_plain_json() -> None:
    assert userdata.parse(json.dumps(GOOD)) == GOOD
    assert userdata.parse(json.dumps(GOOD).encode()) == GOOD


def test_gzip_json() -> None:
    assert userdata.parse(gzip.compress(json.dumps(GOOD).encode())) == GOOD


def test_multipart_with_cloud_config_beside_json() -> None:
    raw = mime(("text/cloud-config", b"#cloud-config\nruncmd:\n - [snaptastic, mount-snapshots, solr]"),
               ("application/json", json.dumps(GOOD).encode()))
    assert userdata.parse(raw) == GOOD
    assert userdata.parse(gzip.compress(raw)) == GOOD


def test_multipart_json_part_found_by_content_when_typed_plain() -> None:
    raw = mime(("text/x-shellscript", b"#!/bin/sh\ntrue"), ("text/plain", json.dumps(GOOD).encode()))
    assert userdata.parse(raw) == GOOD


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\x1f\x8b\x08garbage", "gzip data is corrupt"),
        (mime(("text/cloud-config", b"#cloud-config\n{}")), "no JSON part"),
        (mime(("application/json", b"{nope")), "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (None, "userdata: missing"),
    ],
)
def test_bad_forms_are_bad_input_with_a_clear_line(raw: bytes | None, words: str) -> None:
    with pytest.raises(BadInput) as err:
        userdata.parse(raw)
    assert words in str(err.value)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cluster": "c", "environment": "e"}, "userdata.role: missing"),
        ({**GOOD, "role": ""}, "userdata.role: must be 1 to 256"),
        ({**GOOD, "role": 7}, "userdata.role: must be 1 to 256"),
        ({**GOOD, "cluster": "a;rm -rf /"}, "userdata.cluster: must be 1 to 256"),
        ({**GOOD, "environment": "x" * 257}, "userdata.environment: must be 1 to 256"),
    ],
)
def test_identity_keys_are_validated(data: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput) as err:
        userdata.validate_keys(data)
    assert message in str(err.value)


def test_custom_keys_can_be_required() -> None:
    userdata.validate_keys({"group": "g1"}, ["group"])
    with pytest.raises(BadInput, match=r"userdata\.group: missing"):
        userdata.validate_keys(GOOD, ["group"])


def test_redacted_keeps_identity_only() -> None:
    shown = userdata.redacted({**GOOD, "db_password": "hunter2"})
    assert shown["role"] == "solr" and shown["db_password"] == "<redacted>"


@given(st.binary(max_size=300))
def test_fuzz_parse_bytes_raises_only_our_error(raw: bytes) -> None:
    try:
        result = userdata.parse(raw)
    except BadInput:
        return
    assert isinstance(result, dict)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10))
def test_fuzz_validate_raises_only_our_error(value: object) -> None:
    try:
        data = userdata.parse(json.dumps(value))
        userdata.validate_keys(data)
    except BadInput:
        pass
