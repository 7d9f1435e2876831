"""clean: delete this snapshotter's expired snapshots (always keeping the newest K) and its leaked volumes.

Only resources carrying this snapshotter's filter tags are ever considered; the original tool's cleaner
deleted every expired snapshot of the account.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from snaptastic_boot import times
from snaptastic_boot.ec2 import Ec2, tag_filters, tags_of
from snaptastic_boot.model import SnapshotterSpec

log = logging.getLogger("snaptastic.retention")

# A volume left available this recently may belong to a run still in progress.
LEAKED_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Deletion:
    kind: str
    resource_id: str
    mount_point: str
    reason: str

    def describe(self) -> str:
        return f"{self.kind} {self.resource_id} of {self.mount_point} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def snapshot_id(self) -> str:
        return self.resource_id




def snapshot_filters(spec: SnapshotterSpec) -> list[dict[str, Any]]:
    return tag_filters({**spec.filter_tags, "mount_point": [v.mount_point for v in spec.volumes]})


def volume_filters(spec: SnapshotterSpec) -> list[dict[str, Any]]:
    return [*tag_filters({**spec.filter_tags, "mount_point": [v.mount_point for v in spec.volumes]}),
            {"Name": "tag-key", "Values": ["instance_id"]}, {"Name": "status", "Values": ["available"]}]


def plan_snapshot_cleanup(spec: SnapshotterSpec, snapshots: Sequence[dict[str, Any]], keep: int,
                          now: dt.datetime | None = None) -> list[Deletion]:
    now = now or times.now()
    wanted = dict(spec.filter_tags)
    by_mount: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        tags = tags_of(snap)
        if any(tags.get(k) != v for k, v in wanted.items()) or "mount_point" not in tags:
            continue  # never anything without our tags, whatever the server-side filter returned
        by_mount.setdefault(tags["mount_point"], []).append(snap)
    out: list[Deletion] = []
    for mp, snaps in sorted(by_mount.items()):
        completed = sorted((s for s in snaps if s.get("State") == "completed"), key=times.start_time, reverse=True)
        for snap in completed[keep:]:
            raw = tags_of(snap).get("expires")
            expires = times.parse(raw) if raw else None
            if raw and expires is None:
                log.warning("%s: expires tag %r not understood; keeping it", snap["SnapshotId"], raw)
            if expires is not None and expires < now:
                out.append(Deletion("snapshot", snap["SnapshotId"], mp, f"expired {raw}"))
    return out


def plan_volume_cleanup(spec: SnapshotterSpec, volumes: Sequence[dict[str, Any]], now: dt.datetime | None = None) -> list[Deletion]:
    now = now or times.now()
    out = []
    for vol in volumes:
        tags = tags_of(vol)
        if vol.get("State") != "available" or any(tags.get(k) != v for k, v in spec.filter_tags.items()):
            continue
        if "mount_point" not in tags or "instance_id" not in tags:
            continue
        created = vol.get("CreateTime")
        if isinstance(created, dt.datetime) and now - created < LEAKED_AFTER:
            continue
        out.append(Deletion("volume", vol["VolumeId"], tags["mount_point"], f"available, made for {tags['instance_id']}"))
    return out


def apply(ec2: Ec2, plan: Sequence[Deletion]) -> None:
    for d in plan:
        if d.kind == "snapshot":
            ec2.delete_snapshot(d.resource_id)
        else:
            ec2.delete_volume(d.resource_id)
        log.info("deleted %s", d.describe())
