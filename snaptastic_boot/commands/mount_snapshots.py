"""snaptastic mount-snapshots: restore the volumes of a snapshotter (idempotent: a rerun is harmless)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from snaptastic_boot import tags
from snaptastic_boot.apply.restore import Restorer
from snaptastic_boot.commands.context import Adapters, Inputs, build, print_json, recover, show_plan, start, throttling
from snaptastic_boot.model import canonical_device
from snaptastic_boot.plan import restore
from snaptastic_boot.system import fstab, lock
from snaptastic_boot.system.stopping import GracefulStop
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic")


def fstab_preview(step: restore.VolumeStep) -> str:
    return fstab.Entry("<filesystem uuid>", step.mount_point, step.spec.filesystem, step.spec.mount_options).line()


def run(name: str, inputs: Inputs, *, pins: Sequence[str] = (), before: str | None = None, force: bool = False,
        dry_run: bool = False, as_json: bool = False, tunables: Tunables | None = None,
        adapters: Adapters | None = None) -> int:
    pinned_ids = restore.parse_pins(pins)
    before_time: dt.datetime | None = restore.parse_time(before) if before else None
    r = start(build(inputs, tunables, adapters), name)
    ec2, meta = r.ec2, r.ctx.metadata
    with lock.exclusive(r.paths.lock_file):
        recover(r)
        fstab.check(r.paths.fstab)  # before anything changes: the run ends by editing it
        snapshots = ec2.describe_snapshots(tags.snapshot_filters(r.spec))
        # A filter, not SnapshotIds: EC2 answers an error for an id that does not exist, and check_pinned
        # should name the pin that is wrong (bad input) instead of the run failing on the call.
        found = ec2.describe_snapshots([{"Name": "snapshot-id", "Values": list(pinned_ids.values())}]) if pinned_ids else []
        pinned = restore.check_pinned(r.spec, pinned_ids, found, force)
        ours = ec2.describe_volumes(filters=tags.volume_filters(r.spec, meta.instance_id))
        instance = ec2.describe_instance(meta.instance_id)
        mappings = [m for m in instance.get("BlockDeviceMappings", []) if m.get("Ebs")]
        occupied = {canonical_device(m["DeviceName"]): m["Ebs"]["VolumeId"] for m in mappings}
        flags = {m["Ebs"]["VolumeId"]: m["Ebs"]["DeleteOnTermination"] for m in mappings if "DeleteOnTermination" in m["Ebs"]}
        leftovers = ec2.describe_volumes(filters=[*tags.volume_filters(r.spec), {"Name": "status", "Values": ["available"]}]) \
            if r.spec.reuse_volumes else []
        plan = restore.plan_restore(r.spec, meta.instance_id, meta.availability_zone, snapshots, ours,
                                    r.devices.mounts(), pinned=pinned, before=before_time, occupied=occupied,
                                    leftovers=leftovers, delete_on_termination=flags)
        if dry_run:
            return show_plan(plan, as_json, fstab_line=fstab_preview)
        for note in plan.notes:
            log.warning("%s", note)
        if plan.snapshot_set:
            log.info("plan: restoring snapshot set %s", plan.snapshot_set)
        for step in plan.steps:
            log.info("plan: %s", step.describe())
        with GracefulStop() as stop:
            restorer = Restorer(ec2, r.devices, r.paths.fstab, hooks=r.hooks, stop=stop,
                                wait_timeout=r.ctx.tunables.wait_timeout)
            report = restorer.apply(plan)
    log.info("mount-snapshots done in %.1fs with %d EC2 API calls (%s)%s", report.seconds, ec2.total_calls,
             ", ".join(f"{k} {v}" for k, v in sorted(ec2.calls.items())), throttling(ec2))
    if as_json:
        print_json(report.as_dict())
        return 0
    for v in report.volumes:
        what = "formatted, " if v.formatted else ""
        source = f"from {v.snapshot_id}" if v.snapshot_id else "empty" if v.action == restore.Action.CREATE else v.action
        print(f"{v.mount_point}: {v.volume_id} on {v.local_device} ({what}{source})")
    return 0
