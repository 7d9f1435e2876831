"""snaptastic list-volumes: the configured volumes of a snapshotter, their volume, mount and newest snapshot."""

from __future__ import annotations

from snaptastic_boot import tags
from snaptastic_boot.commands.context import Adapters, Inputs, build, print_json
from snaptastic_boot.plan import restore
from snaptastic_boot.tunables import Tunables


def run(name: str, inputs: Inputs, as_json: bool = False, tunables: Tunables | None = None,
        adapters: Adapters | None = None) -> int:
    ctx = build(inputs, tunables, adapters)
    _, spec = ctx.snapshotter(name)
    ec2 = ctx.ec2()
    instance_id = ctx.metadata.instance_id
    ours = ec2.describe_volumes(filters=tags.volume_filters(spec, instance_id))
    completed, pending = restore.newest_snapshots(ec2.describe_snapshots(tags.snapshot_filters(spec)),
                                                  [v.mount_point for v in spec.volumes])
    devices = ctx.adapters.devices(ctx.tunables.paths)
    rows = []
    for v in spec.volumes:
        current = restore.current_volume(ours, instance_id, v.mount_point, spec.filter_tags)
        snap = completed.get(v.mount_point)
        rows.append({
            "mount_point": v.mount_point,
            "device": v.device,
            "size": v.size,
            "volume_type": v.volume_type,
            "filesystem": v.filesystem,
            "volume_id": current["VolumeId"] if current else None,
            "volume_state": current["State"] if current else "none",
            "mounted": devices.mount_at(v.mount_point) is not None,
            "newest_snapshot": snap["SnapshotId"] if snap else None,
            "newest_snapshot_time": str(snap["StartTime"]) if snap else None,
            "pending_snapshot": pending[v.mount_point]["SnapshotId"] if v.mount_point in pending else None,
        })
    if as_json:
        print_json(rows)
        return 0
    for r in rows:
        state = "mounted" if r["mounted"] else "not mounted"
        vol = f"{r['volume_id']} ({r['volume_state']})" if r["volume_id"] else "no volume"
        newest = f"{r['newest_snapshot']} at {r['newest_snapshot_time']}" if r["newest_snapshot"] else "no snapshot"
        print(f"EBSVolume on {r['mount_point']} from {r['device']} ({r['size']} GiB {r['volume_type']} {r['filesystem']}) "
              f"is {state}; {vol}; newest {newest}")
    return 0
