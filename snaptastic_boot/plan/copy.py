"""copy-snapshots, deciding: which members of which complete snapshot sets to copy to which destination region.

A disaster-recovery copy is useful only as a whole set: every member of a complete set is copied, with all of
its tags (so that `mount-snapshots` in the destination finds and groups the copies exactly as it does local
snapshots) plus the id and region of its source. Copied are the newest complete set and every complete set
newer than the newest one the destination already holds whole (never the older backlog: the destination is
for the latest point in time, and copies cost), oldest first, so that copies under way finish in the order the
sets were taken. EBS runs at most 20 concurrent copies into a region: pending copies count against that, and
what does not fit waits for the next run. Copies are never copied again, so two regions that name each other do
not send snapshots back and forth; a destination that is the source's own region is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from snaptastic_boot import tags, times
from snaptastic_boot.model import SnapshotterSpec
from snaptastic_boot.plan import sets

CONCURRENT_COPY_LIMIT = 20  # EBS: concurrent snapshot copies into one destination region


@dataclass(frozen=True)
class CopyStep:
    region: str
    source_snapshot_id: str
    mount_point: str
    snapshot_set: str
    tags: dict[str, str]


@dataclass(frozen=True)
class CopyPlan:
    snapshotter: str
    source_region: str
    steps: tuple[CopyStep, ...]
    waiting: dict[str, int] = field(default_factory=dict)  # region -> members left for a later run (the limit)
    pending: dict[str, int] = field(default_factory=dict)  # region -> copies already under way

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"copy plan for snapshotter '{self.snapshotter}' from {self.source_region}:"]
        for s in self.steps:
            lines.append(f"  {s.region}: copy {s.source_snapshot_id} ({s.mount_point}, set {s.snapshot_set})")
        for region, count in sorted(self.waiting.items()):
            if count:
                lines.append(f"  {region}: {count} more wait for a later run ({self.pending.get(region, 0)} copies "
                             f"under way, at most {CONCURRENT_COPY_LIMIT} at once)")
        if not self.steps and not any(self.waiting.values()):
            lines.append("  nothing to copy")
        return "\n".join(lines)


def is_copy(snapshot: Mapping[str, Any]) -> bool:
    return tags.SOURCE_SNAPSHOT_ID in tags.tags_of(snapshot)


def plan_copies(spec: SnapshotterSpec, source_region: str, snapshots: Sequence[dict[str, Any]],
                destinations: Mapping[str, Sequence[dict[str, Any]]], now: dt.datetime | None = None,
                under_way: Mapping[str, int] | None = None) -> CopyPlan:
    """`snapshots`: this region's, as DescribeSnapshots returned them; `destinations`: region -> that region's
    snapshots with this snapshotter's tags (its copies among them); `under_way`: region -> copies pending there
    for any snapshotter (the limit is the region's, not one snapshotter's)."""
    now = now or times.now()
    ours = [s for s in snapshots if tags.belongs(s, spec.filter_tags) and not is_copy(s)]
    mount_points = [v.mount_point for v in spec.volumes]
    all_sets = sets.group(ours, mount_points)
    must_cover = sets.covered(all_sets) or mount_points
    complete = [s for s in all_sets if sets.is_complete(s, must_cover) and not _expired(s, now)]  # newest first
    steps: list[CopyStep] = []
    waiting: dict[str, int] = {}
    pending: dict[str, int] = {}
    for region in spec.destination_regions:
        if region == source_region:
            continue  # the same config on an instance in the destination: nothing to copy to itself
        theirs = [s for s in destinations.get(region, ()) if tags.belongs(s, spec.filter_tags) and is_copy(s)]
        copied = {tags.tags_of(s)[tags.SOURCE_SNAPSHOT_ID] for s in theirs if s.get("State") != sets.ERROR}
        done = {tags.tags_of(s)[tags.SOURCE_SNAPSHOT_ID] for s in theirs if s.get("State") == sets.COMPLETED}
        own_pending = sum(1 for s in theirs if s.get("State") == sets.PENDING)
        pending[region] = max(own_pending, (under_way or {}).get(region, 0))
        room = max(0, CONCURRENT_COPY_LIMIT - pending[region])
        held = next((i for i, s in enumerate(complete) if all(m["SnapshotId"] in done for m in s.members.values())),
                    None)
        # Nothing held whole yet: the newest set; else every set newer than the newest held, oldest first.
        chosen = complete[:1] if held is None else list(reversed(complete[:held]))
        wanted = [(snapshot_set, mp, snap) for snapshot_set in chosen
                  for mp, snap in sorted(snapshot_set.members.items()) if snap["SnapshotId"] not in copied]
        for snapshot_set, mp, snap in wanted[:room]:
            copy_tags = {**tags.tags_of(snap), tags.SOURCE_SNAPSHOT_ID: snap["SnapshotId"],
                         tags.SOURCE_REGION: source_region}
            steps.append(CopyStep(region, snap["SnapshotId"], mp, snapshot_set.set_id, copy_tags))
        waiting[region] = max(0, len(wanted) - room)
    return CopyPlan(spec.name, source_region, tuple(steps), waiting, pending)


def _expired(snapshot_set: sets.SnapshotSet, now: dt.datetime) -> bool:
    """A set past its expiry is about to be deleted: copying it would only make work for retention."""
    return any(sets.is_expired(snap, now) for snap in snapshot_set.members.values())
