"""clean, deciding: this snapshotter's expired snapshots (always keeping the newest K) and its leaked volumes.

Only resources carrying this snapshotter's filter tags are ever considered; the original tool's cleaner
deleted every expired snapshot of the account.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from snaptastic_boot import tags, times
from snaptastic_boot.model import SnapshotterSpec
from snaptastic_boot.plan import sets

log = logging.getLogger("snaptastic.retention")

# A volume left available this recently may belong to a run still in progress.
LEAKED_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Deletion:
    kind: str
    resource_id: str
    mount_point: str
    reason: str
    keep: bool = False  # listed to say why it stays, never deleted

    def describe(self) -> str:
        return f"{self.kind} {self.resource_id} of {self.mount_point} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def snapshot_id(self) -> str:
        return self.resource_id




def plan_snapshot_cleanup(spec: SnapshotterSpec, snapshots: Sequence[dict[str, Any]], keep: int,
                          now: dt.datetime | None = None) -> list[Deletion]:
    """Expired snapshots, except the newest `keep` restore points of every mount point. A restore point is a
    complete snapshot set (all its members are kept together) or an old snaptastic snapshot; a set with a
    failed or missing member is no backup and protects nothing. Pending snapshots are never touched."""
    now = now or times.now()
    ours = [s for s in snapshots if tags.belongs(s, spec.filter_tags)]  # whatever the server-side filter returned
    mount_points = sorted({tags.tags_of(s)[tags.MOUNT_POINT] for s in ours})
    all_sets = sets.group(ours, mount_points)
    must_cover = sets.covered(all_sets)
    protected: set[str] = set()
    for mp in mount_points:
        points = [s for s in all_sets if mp in s.members
                  and (sets.is_complete(s, must_cover) if s.tagged else s.state == sets.COMPLETED)]
        for kept in points[:keep]:
            protected.update(snap["SnapshotId"] for snap in kept.members.values())
    out: list[Deletion] = []
    for snap in sorted(ours, key=lambda s: (tags.tags_of(s)[tags.MOUNT_POINT], times.start_time(s))):
        if snap["SnapshotId"] in protected or snap.get("State") not in (sets.COMPLETED, sets.ERROR):
            continue
        raw, expires = sets.expiry(snap)
        if raw and expires is None:
            log.warning("%s: expires tag %r not understood; keeping it", snap["SnapshotId"], raw)
        if sets.is_expired(snap, now):
            what = "failed, " if snap.get("State") == sets.ERROR else ""
            out.append(Deletion("snapshot", snap["SnapshotId"], tags.tags_of(snap)[tags.MOUNT_POINT], f"{what}expired {raw}"))
    return out


def plan_volume_cleanup(spec: SnapshotterSpec, volumes: Sequence[dict[str, Any]], snapshots: Sequence[dict[str, Any]],
                        now: dt.datetime | None = None) -> list[Deletion]:
    """This snapshotter's volumes left available for an hour, each either to delete or (`keep`) to keep and why.

    A volume is deleted only when its data exists elsewhere: a completed snapshot of it started after it was
    last written, that is after unmount-snapshots unmounted it (its `detached` tag). A volume without that
    mark (a run that crashed, or an instance that was replaced) may hold writes no snapshot has: kept."""
    now = now or times.now()
    out = []
    for vol in volumes:
        if vol.get("State") != "available" or not tags.belongs(vol, spec.filter_tags, present=(tags.MOUNT_POINT, tags.INSTANCE_ID)):
            continue
        have = tags.tags_of(vol)
        created = vol.get("CreateTime")
        if isinstance(created, dt.datetime) and now - created < LEAKED_AFTER:
            continue
        mp, vid = have[tags.MOUNT_POINT], vol["VolumeId"]
        detached = times.parse(have[tags.DETACHED]) if have.get(tags.DETACHED) else None
        if detached is None:
            out.append(Deletion("volume", vid, mp, f"made for {have[tags.INSTANCE_ID]} and left available without being "
                                "unmounted by unmount-snapshots: it may hold writes no snapshot has", keep=True))
            continue
        copies = [s for s in snapshots if s.get("VolumeId") == vid and s.get("State") == sets.COMPLETED
                  and times.start_time(s) >= detached]
        if not copies:
            out.append(Deletion("volume", vid, mp, f"no completed snapshot of it since it was unmounted at "
                                f"{have[tags.DETACHED]}", keep=True))
            continue
        out.append(Deletion("volume", vid, mp, f"detached, its data is in {copies[-1]['SnapshotId']}"))
    return out
