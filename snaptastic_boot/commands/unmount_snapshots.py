"""snaptastic unmount-snapshots: unmount and detach (or delete) the volumes of a snapshotter."""

from __future__ import annotations

from snaptastic_boot import tags
from snaptastic_boot.apply.unmount import Unmounter
from snaptastic_boot.commands.context import Adapters, Inputs, build, confirm, print_json, recover, show_plan, start
from snaptastic_boot.plan import snapshot, unmount
from snaptastic_boot.system import fstab, lock
from snaptastic_boot.tunables import Tunables


def run(name: str, inputs: Inputs, *, delete: bool = False, yes: bool = False, dry_run: bool = False,
        as_json: bool = False, tunables: Tunables | None = None, adapters: Adapters | None = None) -> int:
    r = start(build(inputs, tunables, adapters), name)
    instance_id = r.ctx.metadata.instance_id
    with lock.exclusive(r.paths.lock_file):
        recover(r)
        fstab.check(r.paths.fstab)  # before anything changes: the run ends by editing it
        ours = r.ec2.describe_volumes(filters=tags.volume_filters(r.spec, instance_id))
        plan = unmount.plan_unmount(r.spec, instance_id, ours, r.devices.mounts(), delete=delete,
                                    description=snapshot.description(r.snapshotter, r.spec))
        if dry_run:
            return show_plan(plan, as_json)
        mount_points = ", ".join(v.mount_point for v in r.spec.volumes)
        question = f"Unmount and detach {mount_points}{' and DELETE the volumes' if delete else ''}?"
        if not yes and not confirm(question):
            print("nothing done")
            return 1
        report = Unmounter(r.ec2, r.devices, r.paths.fstab, hooks=r.hooks,
                           wait_timeout=r.ctx.tunables.wait_timeout).apply(plan)
    if as_json:
        print_json(report)
        return 0
    for line in report["done"]:
        print(line)
    return 0
