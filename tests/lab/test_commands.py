"""`snaptastic test`, `list-volumes`, metadata and userdata through the lab's IMDS."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from tests.lab.agent import configure, ok, volumes
from tests.mime import mime

IDENTITY = {"role": "solr", "cluster": "solr-cluster", "environment": "test"}




def test_snaptastic_test_reports_metadata_userdata_credentials_tools(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    out = ok(lab.run("test")).stdout
    assert f"instance-id: {lab.instance_id}" in out
    assert "availability-zone: us-east-1a" in out and "region: us-east-1" in out
    assert "role: solr" in out and "cluster: solr-cluster" in out
    assert "(IMDSv2)" in out
    assert f"credentials: ok (EC2 in us-east-1 sees {lab.instance_id}" in out
    assert "tools: ok" in out


def test_imdsv1_only_service_still_works(lab: Any) -> None:
    lab.faults.imds_mode = "v1-only"
    result = ok(lab.run("test"))
    assert "(IMDSv1)" in result.stdout and "does not support IMDSv2" in result.stderr


def test_metadata_service_down_is_exit_3(lab: Any) -> None:
    lab.faults.imds_down = True
    result = lab.run("test", env={**lab.env, "SNAPTASTIC_IMDS_TIMEOUT": "1"})
    assert result.returncode == 3
    assert "metadata service" in result.stderr and "did not answer" in result.stderr


def test_metadata_service_slow_to_come_up_is_retried(lab: Any) -> None:
    lab.faults.imds_fail_for = 1.5
    assert "instance-id" in ok(lab.run("test")).stdout


@pytest.mark.parametrize(
    "userdata",
    [
        json.dumps(IDENTITY).encode(),
        gzip.compress(json.dumps(IDENTITY).encode()),
        mime(("text/cloud-config", b"#cloud-config\nruncmd:\n - [snaptastic, mount-snapshots, solr]"),
             ("application/json", json.dumps(IDENTITY).encode())),
        gzip.compress(mime(("application/json", json.dumps(IDENTITY).encode()))),
    ],
    ids=["json", "gzip", "mime", "gzip-mime"],
)
def test_userdata_forms_through_imds(lab: Any, userdata: bytes) -> None:
    lab.set_userdata(userdata)
    env = configure(lab, volumes(lab, 1))
    out = ok(lab.run("mount-snapshots", "solr", "--dry-run", env=env)).stdout
    assert "create empty 1 GiB gp3" in out


@pytest.mark.parametrize(
    ("userdata", "message"),
    [
        (b"role=solr", "userdata: not valid JSON"),
        (b'["solr"]', "userdata: must be a JSON object"),
        (b"\x1f\x8b\x08\x00broken", "userdata: gzip data is corrupt"),
        (mime(("text/cloud-config", b"#cloud-config\n{}")), "no JSON part"),
        (json.dumps({"role": "solr", "cluster": "c"}).encode(), "userdata.environment: missing"),
        (json.dumps({**IDENTITY, "role": "solr;reboot"}).encode(), "userdata.role: must be"),
        (None, "userdata: missing"),
    ],
    ids=["not-json", "not-object", "bad-gzip", "mime-without-json", "missing-key", "bad-chars", "none"],
)
def test_bad_userdata_is_exit_2_and_changes_nothing(lab: Any, userdata: bytes | None, message: str) -> None:
    lab.set_userdata(userdata)
    env = configure(lab, volumes(lab, 1))
    lab.reset_calls()
    result = lab.run("mount-snapshots", "solr", env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not [a for _, a in lab.calls if not a.startswith("Describe")]


def test_userdata_override_for_porting_old_systems(lab: Any) -> None:
    lab.set_userdata(None)
    env = configure(lab, volumes(lab, 1))
    out = ok(lab.run("list-volumes", "solr", "--userdata", json.dumps(IDENTITY), env=env)).stdout
    assert "is not mounted; no volume; newest no snapshot" in out


def test_list_volumes_shows_state(lab: Any) -> None:
    env = configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr", env=env))
    out = ok(lab.run("list-volumes", "solr", env=env)).stdout.splitlines()
    assert len(out) == 2
    assert all("is mounted; vol-" in line and "(in-use)" in line for line in out)


def test_unknown_snapshotter_lists_known(lab: Any) -> None:
    env = configure(lab, volumes(lab, 1))
    result = lab.run("mount-snapshots", "sorl", env=env)
    assert result.returncode == 2
    assert "snapshotter 'sorl' is not defined; did you mean 'solr'? known: solr" in result.stderr


def test_version_and_help_do_not_import_boto3() -> None:
    import subprocess
    import sys

    for flag in ("--version", "--help"):
        code = f"import sys; from snaptastic_boot.cli import main\ntry:\n    main(['{flag}'])\nexcept SystemExit:\n    pass\nprint('boto3' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False"
