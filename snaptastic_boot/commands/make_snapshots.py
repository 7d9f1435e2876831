"""snaptastic make-snapshots: freeze, snapshot in one call and thaw the mounted volumes of a snapshotter."""

from __future__ import annotations

import logging

from snaptastic_boot import messages, metrics
from snaptastic_boot.apply.snapshot import SnapshotMaker, SnapshotReport, local_devices
from snaptastic_boot.commands.context import Adapters, Inputs, Run, build, print_json, recover, show_plan, start, throttling
from snaptastic_boot.plan import snapshot
from snaptastic_boot.system import handled, lock
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic")


def run(name: str, inputs: Inputs, *, freeze: bool = True, wait: bool = False, dry_run: bool = False,
        as_json: bool = False, tunables: Tunables | None = None, adapters: Adapters | None = None) -> int:
    r = start(build(inputs, tunables, adapters), name)
    with lock.exclusive(r.paths.lock_file):
        if released_by_watch(r):
            log.info("%s", messages.released_by_watch(name))
            return 0
        plan = plan_for(r, freeze=freeze)
        if dry_run:
            return show_plan(plan, as_json)
        report = take(r, plan, wait=wait)
    metrics.observe("snaptastic_freeze_seconds", report.freeze_ms / 1000)
    metrics.observe("snaptastic_writes_held_seconds", report.blocked_ms / 1000)
    metrics.observe("snaptastic_snapshots_taken", len(report.snapshots))
    log.info("make-snapshots done with %d EC2 API calls%s", r.ec2.total_calls, throttling(r.ec2))
    if as_json:
        print_json(report.as_dict())
        return 0
    for mp, snap_id in sorted(report.snapshots.items()):
        print(f"{mp}: {snap_id}")
    print(f"frozen for {report.freeze_ms:.0f} ms")
    return 0


def released_by_watch(r: Run) -> bool:
    """`snaptastic watch` released the volumes at this boot (its state lives in the run directory, emptied at
    boot) and none of the snapshotter's mount points is mounted again: the shutdown's snapshot was taken."""
    if not handled.load(r.paths.watch_state)[1]:
        return False
    mounted = {m.mount_point for m in r.devices.mounts()}
    return not any(v.mount_point in mounted for v in r.spec.volumes)


def plan_for(r: Run, *, freeze: bool = True) -> snapshot.SnapshotPlan:
    """Under the lock: thaw what a killed run left frozen, read the world and decide (refusing before anything
    is frozen when a volume has as many pending snapshots as EBS allows)."""
    recover(r)
    instance = r.ec2.describe_instance(r.ctx.metadata.instance_id)
    plan = snapshot.plan_snapshots(r.spec, snapshot.description(r.snapshotter, r.spec), instance,
                                   r.devices.mounts(), local_devices(r.devices, instance), freeze=freeze)
    volume_ids = [t.volume_id for t in plan.targets]
    volumes = r.ec2.describe_volumes(volume_ids=volume_ids)
    plan = snapshot.with_missing_tags(plan, r.spec.filter_tags, volumes)
    pending = r.ec2.describe_snapshots([{"Name": "volume-id", "Values": volume_ids},
                                        {"Name": "status", "Values": ["pending"]}]) if volume_ids else []
    snapshot.check_pending_limits(plan, volumes, pending)
    return plan


def take(r: Run, plan: snapshot.SnapshotPlan, *, wait: bool = False) -> SnapshotReport:
    """Under the lock: hooks, freeze, one CreateSnapshots call, thaw."""
    maker = SnapshotMaker(r.ec2, r.devices, hooks=r.hooks, max_freeze=r.ctx.tunables.max_freeze,
                          wait_timeout=r.ctx.tunables.wait_timeout, expedite_freeze=r.ctx.tunables.expedite_freeze)
    return maker.apply(plan, wait=wait)
