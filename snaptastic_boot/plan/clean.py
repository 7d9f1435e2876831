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




def plan_snapshot_cleanup(spec: SnapshotterSpec, snapshots: Sequence[dict[str, Any]], keep: int,
                          now: dt.datetime | None = None) -> list[Deletion]:
    now = now or times.now()
    by_mount: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        if not tags.belongs(snap, spec.filter_tags):
            continue  # never anything without our tags, whatever the server-side filter returned
        by_mount.setdefault(tags.tags_of(snap)[tags.MOUNT_POINT], []).append(snap)
    out: list[Deletion] = []
    for mp, snaps in sorted(by_mount.items()):
        completed = sorted((s for s in snaps if s.get("State") == "completed"), key=times.start_time, reverse=True)
        for snap in completed[keep:]:
            raw = tags.tags_of(snap).get(tags.EXPIRES)
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
        if vol.get("State") != "available" or not tags.belongs(vol, spec.filter_tags, present=(tags.MOUNT_POINT, tags.INSTANCE_ID)):
            continue
        have = tags.tags_of(vol)
        created = vol.get("CreateTime")
        if isinstance(created, dt.datetime) and now - created < LEAKED_AFTER:
            continue
        out.append(Deletion("volume", vol["VolumeId"], have[tags.MOUNT_POINT], f"available, made for {have[tags.INSTANCE_ID]}"))
    return out
