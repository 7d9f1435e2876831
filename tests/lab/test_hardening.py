"""Settings and inputs that used to be accepted or crash as a bug: each is refused with exit 2 or 3, in one
line naming the field, and nothing changes; a slow metadata service is still used."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.lab.agent import configure, ok, our_volumes, volumes
from tests.lab.test_settings_file import settings_env

IDENTITY = {"role": "solr", "cluster": "solr-cluster", "environment": "test"}


def one_line_error(result: Any, code: int, *words: str) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("snaptastic: error:")]
    assert len(lines) == 1, result.stderr
    assert "this is a bug" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot_ids(lab: Any) -> set[str]:
    return {s["SnapshotId"] for s in lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


@pytest.mark.parametrize("keep", ["0", "-1", "many"])
def test_clean_refuses_a_keep_below_one(lab: Any, keep: str) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("make-snapshots", "solr"))
    before = snapshot_ids(lab)
    one_line_error(lab.run("clean", "snapshots", "solr", "--keep", keep, "--force"), 2, "--keep", keep)
    assert snapshot_ids(lab) == before and before


SETTINGS = """
    from snaptastic_boot import Snapshotter, EBSVolume

    class SolrSnapshotter(Snapshotter):
        name = 'solr'
        {line}

        def get_volumes(self):
            return [EBSVolume('/dev/sdf', {mount!r}, size=1)]
"""


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("KEEP_SNAPSHOTS = 0", "KEEP_SNAPSHOTS"),
        ("KEEP_SNAPSHOTS = -1", "KEEP_SNAPSHOTS"),
        ("KEEP_SNAPSHOTS = '3'", "KEEP_SNAPSHOTS"),
        ("SNAPSHOT_EXPIRY_DAYS = 1e9", "SNAPSHOT_EXPIRY_DAYS"),
        ("SNAPSHOT_EXPIRY_DAYS = float('nan')", "SNAPSHOT_EXPIRY_DAYS"),
        ("SNAPSHOT_EXPIRY_DAYS = -3", "SNAPSHOT_EXPIRY_DAYS"),
        ("PENDING_SNAPSHOT_WAIT = -5", "PENDING_SNAPSHOT_WAIT"),
    ],
)
def test_settings_file_numbers_get_the_json_schema_bounds(lab: Any, line: str, field: str) -> None:
    env = settings_env(lab, SETTINGS.format(line=line, mount=str(lab.mount_root / "solr")))
    for command in (["mount-snapshots", "solr"], ["make-snapshots", "solr"], ["clean", "snapshots", "--force"]):
        one_line_error(lab.run(*command, env=env), 2, f"SolrSnapshotter.{field}")
    assert our_volumes(lab) == [] and snapshot_ids(lab) == set()


def test_a_userdata_value_with_a_trailing_newline_is_refused(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.set_userdata(json.dumps({**IDENTITY, "role": "solr\n"}))
    one_line_error(lab.run("mount-snapshots", "solr"), 2, "userdata.role")
    assert our_volumes(lab) == []


def test_partial_credentials_are_an_environment_problem(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    env = {**lab.env, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    one_line_error(lab.run("mount-snapshots", "solr", env=env), 3, "AWS_SECRET_ACCESS_KEY")
    assert our_volumes(lab) == []


def test_a_slow_metadata_service_is_still_used(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.faults.imds_latency = 2.5
    assert "plan for snapshotter 'solr'" in ok(lab.run("mount-snapshots", "solr", "--dry-run")).stdout


def test_a_failing_metadata_service_fails_within_the_bound_and_names_the_status(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    lab.faults.imds_fail_for = 600
    started = time.monotonic()
    result = lab.run("mount-snapshots", "solr", env={**lab.env, "SNAPTASTIC_IMDS_TIMEOUT": "4"})
    elapsed = time.monotonic() - started
    line = one_line_error(result, 3, "HTTP 503", "did not answer")
    # The agent's own account of how long it tried, and the whole run, interpreter start included.
    tried = int(re.search(r"did not answer \S+ in (\d+)s", line).group(1))  # type: ignore[union-attr]
    assert tried <= 4 and elapsed < 4 + 10
