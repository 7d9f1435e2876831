"""copy-snapshots through `cli.main`, against an in-memory EC2 per region: no destination means no EC2 call at
all; copies carry their tags and are made once; the region's limit counts every snapshotter's copies under way,
and a copy EC2 refuses for the limit waits for the next run instead of failing the run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from snaptastic_boot.commands.context import Adapters
from snaptastic_boot.config import settings as settings_mod
from snaptastic_boot.errors import LockHeld, ValidationFailed
from snaptastic_boot.plan.copy import CONCURRENT_COPY_LIMIT
from snaptastic_boot.snapshotter import EBSVolume, Snapshotter
from snaptastic_boot.system import lock
from tests.unit.fakes import ZONE, FakeEc2, tag_list
from tests.unit.test_commands import MOUNTS, TAGS, Agent, agent  # noqa: F401 (the fixture)

HOME, AWAY = ZONE[:-1], "us-west-2"
NOW = dt.datetime.now(dt.timezone.utc)


class Regions(dict[str, FakeEc2]):
    """EC2 by region (the agent's own is HOME's); `asked` lists the regions a command made a client for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def __missing__(self, region: str) -> FakeEc2:
        self[region] = FakeEc2(peers=self)
        return self[region]


@pytest.fixture
def regions(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> Regions:  # noqa: F811
    by_region = Regions()
    by_region[HOME] = agent.ec2
    agent.ec2.peers = by_region

    def ec2(region: str, tunables: Any) -> FakeEc2:
        by_region.asked.append(region)
        return by_region[region]

    monkeypatch.setattr(Adapters, "default", staticmethod(
        lambda: Adapters(imds=lambda tunables: agent.imds, ec2=ec2, devices=lambda paths: agent.devices)))
    return by_region


def a_complete_set(agent: Agent) -> dict[str, str]:  # noqa: F811
    """mount point -> snapshot id of a set taken now and completed."""
    expires = {**TAGS, "expires": "2099-01-01T00:00:00Z", "snapshot_set": "set-1"}
    return {mp: agent.ec2.add_snapshot(mp, expires, minutes_ago=5) for mp in MOUNTS}


def test_without_destination_regions_no_ec2_call_at_all(agent: Agent, regions: Regions) -> None:  # noqa: F811
    a_complete_set(agent)
    agent.ec2.calls.clear()
    code, _, _ = agent("copy-snapshots", "solr")
    assert code == 0 and regions.asked == [] and sum(agent.ec2.calls.values()) == 0
    agent.configure(destination_regions=[HOME])  # the same config on an instance in its destination
    code, out, _ = agent("copy-snapshots", "solr", "--json")
    assert code == 0 and json.loads(out) == {"snapshotter": "solr", "copies": {}, "waiting": {}}
    assert regions.asked == [] and sum(agent.ec2.calls.values()) == 0


def test_copies_are_made_once_with_every_tag_and_a_dry_run_copies_nothing(agent: Agent,  # noqa: F811
                                                                          regions: Regions) -> None:
    agent.configure(destination_regions=[AWAY])
    sources = a_complete_set(agent)
    code, out, _ = agent("copy-snapshots", "solr", "--dry-run", "--json")
    assert code == 0 and {s["source_snapshot_id"] for s in json.loads(out)["steps"]} == set(sources.values())
    assert regions[AWAY].calls["CopySnapshot"] == 0 and not regions[AWAY].snapshots
    code, out, _ = agent("copy-snapshots", "solr", "--json")
    assert code == 0
    report = json.loads(out)
    assert {c["source"] for c in report["copies"][AWAY]} == set(sources.values())
    for copy in regions[AWAY].snapshots.values():
        have = {t["Key"]: t["Value"] for t in copy["Tags"]}
        source = agent.ec2.snapshots[have["source_snapshot_id"]]
        assert have == {**{t["Key"]: t["Value"] for t in source["Tags"]}, "source_region": HOME,
                        "source_snapshot_id": source["SnapshotId"]}
    code, out, _ = agent("copy-snapshots", "solr")
    assert code == 0 and "nothing to copy" in out and regions[AWAY].calls["CopySnapshot"] == 2


def test_a_second_copy_run_at_the_same_time_copies_nothing_and_snapshots_are_not_held(agent: Agent,  # noqa: F811
                                                                                      regions: Regions) -> None:
    agent.configure(destination_regions=[AWAY])
    a_complete_set(agent)
    with lock.exclusive(agent.run_dir / "copy.lock"):
        code, _, err = agent("copy-snapshots", "solr")
        assert code == LockHeld.exit_code and "copy.lock" in err, err
        assert regions[AWAY].calls["CopySnapshot"] == 0
        with lock.exclusive(agent.run_dir / "snaptastic.lock"):  # the lock of snapshots and restores is free
            pass
    assert agent("copy-snapshots", "solr")[0] == 0 and regions[AWAY].calls["CopySnapshot"] == 2


def test_copies_under_way_for_another_snapshotter_count_against_the_limit(agent: Agent,  # noqa: F811
                                                                         regions: Regions) -> None:
    agent.configure(destination_regions=[AWAY])
    a_complete_set(agent)
    away = regions[AWAY]
    for i in range(CONCURRENT_COPY_LIMIT - 1):  # another snapshotter's copies, still pending
        sid = f"snap-other{i}"
        away.snapshots[sid] = {"SnapshotId": sid, "State": "pending", "StartTime": NOW,
                               "Tags": tag_list({"role": "db", "mount_point": "/mnt/db",
                                                 "source_snapshot_id": f"snap-src{i}"})}
    code, out, _ = agent("copy-snapshots", "solr", "--json")
    report = json.loads(out)
    assert code == 0 and len(report["copies"][AWAY]) == 1 and report["waiting"] == {AWAY: 1}
    assert away.calls["CopySnapshot"] == 1


def test_a_copy_refused_for_the_limit_waits_for_the_next_run(agent: Agent, regions: Regions) -> None:  # noqa: F811
    agent.configure(destination_regions=[AWAY])
    a_complete_set(agent)
    away = regions[AWAY]
    away.fail("CopySnapshot", "ResourceLimitExceeded", "Too many snapshot copies in progress.")
    code, out, _ = agent("copy-snapshots", "solr")
    assert code == 0 and f"{AWAY}: 2 more to copy in a later run" in out and not away.snapshots
    away.heal("CopySnapshot")
    assert agent("copy-snapshots", "solr")[0] == 0 and len(away.snapshots) == 2
    away.fail("CopySnapshot", "UnauthorizedOperation")
    for sid in list(away.snapshots):
        del away.snapshots[sid]
    assert agent("copy-snapshots", "solr")[0] == 1  # any other refusal fails the run


def test_destination_regions_in_a_settings_file_in_either_spelling(tmp_path: Path) -> None:
    class Lower(Snapshotter):
        destination_regions = ["us-west-2", "eu-west-1"]

        def get_volumes(self) -> list[EBSVolume]:
            return [EBSVolume("/dev/sdf", "/mnt/a")]

    class Upper(Lower):
        destination_regions = ()
        DESTINATION_REGIONS = ("ap-southeast-2",)

    assert Lower(TAGS).spec().destination_regions == ("us-west-2", "eu-west-1")
    assert Upper(TAGS).spec().destination_regions == ("ap-southeast-2",)
    Lower.destination_regions = ["us-west-2", "us-west-2"]
    with pytest.raises(ValidationFailed, match=r"Lower\.destination_regions"):
        settings_mod._validate_settings_values("Lower", Lower(TAGS).spec())


def test_clean_applies_retention_in_each_destination_once(agent: Agent, regions: Regions) -> None:  # noqa: F811
    agent.configure(destination_regions=[AWAY, HOME])  # one config for both regions: its own is cleaned once
    expired = {**TAGS, "expires": "2020-01-01T00:00:00Z"}
    for i in range(3):
        for mp in MOUNTS:
            agent.ec2.add_snapshot(mp, {**expired, "snapshot_set": f"s{i}"}, minutes_ago=100 - i)
    assert agent("copy-snapshots", "solr")[0] == 0 and not regions[AWAY].snapshots  # expired sets: never copied
    for sid, snap in list(agent.ec2.snapshots.items()):  # copies made while they were still current
        regions[AWAY].snapshots["copy-" + sid] = {**snap, "SnapshotId": "copy-" + sid, "Tags": [
            *snap["Tags"], *tag_list({"source_snapshot_id": sid, "source_region": HOME})]}
    code, out, _ = agent("clean", "snapshots", "solr", "--keep", "1", "--force")
    assert out.count(f"delete in {AWAY}:") == 4, out
    assert code == 0 and agent.ec2.calls["DeleteSnapshot"] == 4 and regions[AWAY].calls["DeleteSnapshot"] == 4
    newest = {"s2"}
    for ec2 in (agent.ec2, regions[AWAY]):
        assert {t["Value"] for s in ec2.snapshots.values() for t in s["Tags"] if t["Key"] == "snapshot_set"} == newest


def test_check_backups_region_checks_that_region_and_a_bad_name_is_bad_input(agent: Agent,  # noqa: F811
                                                                             regions: Regions) -> None:
    agent.configure(destination_regions=[AWAY])
    agent("mount-snapshots", "solr")
    a_complete_set(agent)
    assert agent("check-backups", "solr", "--age", "1h")[0] == 0
    code, out, _ = agent("check-backups", "solr", "--age", "1h", "--region", AWAY)
    assert code == 1 and "CRITICAL" in out  # nothing copied there yet
    assert agent("copy-snapshots", "solr")[0] == 0
    assert agent("check-backups", "solr", "--age", "1h", "--region", AWAY)[0] == 0
    asked = len(regions.asked)
    code, _, err = agent("check-backups", "solr", "--region", "US West")
    assert code == 2 and "'US West' is not an AWS region name" in err and len(regions.asked) == asked
