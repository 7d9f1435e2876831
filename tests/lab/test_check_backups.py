"""check-backups for every configured snapshotter, with its own tag keys, on and off EC2, and on sets."""

from __future__ import annotations

import json
from typing import Any

from tests.lab.agent import configure, ok, volumes
from tests.lab.test_settings_file import settings_env

CUSTOM = """
    from snaptastic_boot import Snapshotter, EBSVolume

    class SearchSnapshotter(Snapshotter):
        name = 'search'

        def get_volumes(self):
            return [EBSVolume('/dev/sdf', {mount!r}, size=1)]

        def get_filter_tags(self):
            return {{'service': self.userdata['service'], 'shard': self.userdata['shard']}}
"""


def test_a_snapshotter_with_custom_filter_tags_is_checked_with_them(lab: Any) -> None:
    lab.set_userdata(json.dumps({"service": "search", "shard": "3"}))
    env = settings_env(lab, CUSTOM.format(mount=str(lab.mount_root / "search")))
    ok(lab.run("mount-snapshots", "search", env=env))
    stale = lab.run("check-backups", "--age", "1d", env=env)
    assert stale.returncode == 1 and "no completed snapshot" in stale.stdout
    ok(lab.run("make-snapshots", "search", env=env))
    fresh = ok(lab.run("check-backups", "--age", "1d", env=env))
    assert fresh.stdout.count("OK ") == 1 and "(search)" in fresh.stdout
    # Off EC2: no metadata service, the tags and the region given.
    lab.faults.imds_down = True
    off = {**env, "AWS_REGION": lab.region, "SNAPTASTIC_IMDS_TIMEOUT": "1", "AWS_ACCESS_KEY_ID": "monitor",
           "AWS_SECRET_ACCESS_KEY": "monitor"}
    assert ok(lab.run("check-backups", "--tag", "service=search", "--tag", "shard=3", env=off)).stdout.count("OK ") == 1
    other = lab.run("check-backups", "--tag", "service=search", "--tag", "shard=4", env=off)
    assert other.returncode == 1 and "UNKNOWN" in other.stdout


def test_a_bad_tag_option_is_exit_2(lab: Any) -> None:
    result = lab.run("check-backups", "--tag", "service")
    assert result.returncode == 2 and "--tag: 'service' must look like KEY=VALUE" in result.stderr


def test_an_incomplete_newest_set_is_reported_and_the_complete_one_is_judged(lab: Any) -> None:
    configure(lab, volumes(lab, 2))
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("make-snapshots", "solr"))
    newest = json.loads(ok(lab.run("make-snapshots", "solr", "--json")).stdout)["snapshots"]
    lab.fail_snapshot(newest[str(lab.mount_root / "data1")])
    result = lab.run("check-backups", "--age", "1d")
    assert result.returncode == 1
    assert result.stdout.count("is incomplete: its snapshot of") == 2 and "data1 failed" in result.stdout
    report = json.loads(lab.run("check-backups", "--age", "1d", "--json").stdout)
    assert {r["ok"] for r in report} == {False} and all("incomplete" in r["problem"] for r in report)
    assert all(r["snapshot_id"] not in newest.values() and r["snapshot_set"] for r in report)
