"""copy-snapshots, deciding: whole complete sets, newest first, each member once, within EBS's copy limit."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from snaptastic_boot import tags
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import copy

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.timezone.utc)
TAGS = {"role": "solr", "cluster": "c", "environment": "e"}
SPEC = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/a", 20), VolumeSpec("/dev/sdg", "/mnt/b", 20)), TAGS,
                       destination_regions=("us-west-2",))
FUTURE = "2026-12-30T00:00:00Z"


def snap(sid: str, mp: str, hours_ago: float, set_id: str, state: str = "completed", expires: str = FUTURE,
         **extra: str) -> dict[str, Any]:
    t = {**TAGS, "mount_point": mp, "snapshot_set": set_id, "expires": expires, **extra}
    return {"SnapshotId": sid, "StartTime": NOW - dt.timedelta(hours=hours_ago), "State": state,
            "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}


def a_set(n: int, hours_ago: float, state: str = "completed", **extra: str) -> list[dict[str, Any]]:
    return [snap(f"snap-{n}a", "/mnt/a", hours_ago, f"set-{n}", state, **extra),
            snap(f"snap-{n}b", "/mnt/b", hours_ago, f"set-{n}", **extra)]


def copy_of(source: dict[str, Any], state: str = "completed") -> dict[str, Any]:
    t = {**tags.tags_of(source), tags.SOURCE_SNAPSHOT_ID: source["SnapshotId"], tags.SOURCE_REGION: "us-east-1"}
    return {"SnapshotId": "snap-copy-" + source["SnapshotId"], "StartTime": NOW, "State": state,
            "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}


def test_the_newest_complete_set_whole_with_all_tags_and_the_source_not_the_backlog() -> None:
    newest, older = a_set(2, 1), a_set(1, 5)
    plan = copy.plan_copies(SPEC, "us-east-1", [*older, *newest, *a_set(3, 0.1, state="pending")],
                            {"us-west-2": []}, now=NOW)
    assert [s.source_snapshot_id for s in plan.steps] == ["snap-2a", "snap-2b"]
    first = plan.steps[0]
    assert first.region == "us-west-2" and first.snapshot_set == "set-2"
    assert first.tags == {**tags.tags_of(newest[0]), "source_snapshot_id": "snap-2a", "source_region": "us-east-1"}


def test_sets_newer_than_the_newest_held_oldest_first_within_the_copy_limit() -> None:
    sets = [s for n in range(15) for s in a_set(n, 20 - n)]  # set 14 is the newest
    held = [copy_of(s) for s in sets[:2]]  # set 0, copied whole
    under_way = [copy_of(s, state="pending") for s in sets[2:8]]  # sets 1 to 3
    plan = copy.plan_copies(SPEC, "us-east-1", sets, {"us-west-2": held + under_way}, now=NOW)
    assert plan.pending == {"us-west-2": 6}
    assert len(plan.steps) == copy.CONCURRENT_COPY_LIMIT - 6  # 20 at once, 6 already under way
    assert [s.snapshot_set for s in plan.steps][:2] == ["set-4", "set-4"]  # oldest first, after those under way
    assert plan.waiting == {"us-west-2": 28 - 6 - 14}
    assert not {s.source_snapshot_id for s in plan.steps} & {c["SnapshotId"].removeprefix("snap-copy-")
                                                             for c in held + under_way}
    newest_held = copy.plan_copies(SPEC, "us-east-1", sets, {"us-west-2": [copy_of(s) for s in sets[-2:]]}, now=NOW)
    assert newest_held.steps == ()  # the destination holds the latest point in time: nothing older is copied


def test_incomplete_expired_foreign_and_copied_sets_are_not_copied() -> None:
    failed = [snap("snap-9a", "/mnt/a", 1, "set-9", state="error"), snap("snap-9b", "/mnt/b", 1, "set-9")]
    half = [snap("snap-8a", "/mnt/a", 2, "set-8")]  # a member missing
    expired = a_set(7, 3, expires="2026-11-01T00:00:00Z")
    foreign = a_set(6, 4, cluster="other")
    copies = [copy_of(s) for s in a_set(5, 5)]  # copies made here from elsewhere: never copied on
    plan = copy.plan_copies(SPEC, "us-east-1", [*failed, *half, *expired, *foreign, *copies], {"us-west-2": []},
                            now=NOW)
    assert plan.steps == () and plan.waiting == {"us-west-2": 0}


def test_each_destination_gets_its_own_copies_and_nothing_without_destinations() -> None:
    two = dataclasses.replace(SPEC, destination_regions=("us-west-2", "eu-west-1"))
    source = a_set(1, 1)
    plan = copy.plan_copies(two, "us-east-1", source, {"us-west-2": [copy_of(source[0])], "eu-west-1": []}, now=NOW)
    assert [(s.region, s.source_snapshot_id) for s in plan.steps] == [
        ("us-west-2", "snap-1b"), ("eu-west-1", "snap-1a"), ("eu-west-1", "snap-1b")]
    at_home = dataclasses.replace(SPEC, destination_regions=("us-east-1",))  # the same config, in the destination
    assert copy.plan_copies(at_home, "us-east-1", source, {"us-east-1": source}, now=NOW).steps == ()
    none = dataclasses.replace(SPEC, destination_regions=())
    assert copy.plan_copies(none, "us-east-1", source, {}, now=NOW).steps == ()


def test_copies_are_ordered_by_their_sources_point_in_time_not_by_when_they_were_copied() -> None:
    from snaptastic_boot.plan import sets

    older = [copy_of(s) for s in a_set(1, 5, created="2026-11-27T07:00:00Z")]
    newer = [copy_of(s) for s in a_set(2, 1, created="2026-11-27T11:00:00Z")]
    for c in older:
        c["StartTime"] = NOW + dt.timedelta(minutes=5)  # the older set's copies were made last
    chosen = sets.choose([*older, *newer], ["/mnt/a", "/mnt/b"])
    assert {tags.tags_of(s)["snapshot_set"] for s in chosen.chosen.members.values()} == {"set-2"}


def test_copies_under_way_for_other_snapshotters_leave_less_room() -> None:
    sets = [s for n in range(12) for s in a_set(n, 20 - n)]  # 24 members; nothing copied yet: the newest set
    plan = copy.plan_copies(SPEC, "us-east-1", sets, {"us-west-2": []}, now=NOW, under_way={"us-west-2": 19})
    assert len(plan.steps) == 1 and plan.waiting == {"us-west-2": 1} and plan.pending == {"us-west-2": 19}
    full = copy.plan_copies(SPEC, "us-east-1", sets, {"us-west-2": []}, now=NOW, under_way={"us-west-2": 25})
    assert full.steps == () and full.waiting == {"us-west-2": 2}
