"""snaptastic clean: delete expired snapshots or leaked volumes of one or every configured snapshotter."""

from __future__ import annotations

import logging
from typing import Any

from snaptastic_boot import messages, tags
from snaptastic_boot.apply.clean import delete_all
from snaptastic_boot.commands.context import Adapters, Inputs, build, confirm, print_json
from snaptastic_boot.errors import BadInput
from snaptastic_boot.plan import clean
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic")


def run(component: str, name: str | None, inputs: Inputs, *, keep: int | None = None, dry_run: bool = False,
        force: bool = False, as_json: bool = False, tunables: Tunables | None = None,
        adapters: Adapters | None = None) -> int:
    ctx = build(inputs, tunables, adapters)
    # Without a name (as the original `snaptastic clean snapshots`), every configured snapshotter.
    specs = [ctx.snapshotter(n)[1] for n in ([name] if name else ctx.settings.names)]
    if not specs:
        raise BadInput(messages.CLEAN_NOTHING_CONFIGURED)
    ec2 = ctx.ec2()
    plan: list[Any] = []
    elsewhere: dict[str, list[Any]] = {}  # destination region -> its deletions (copy-snapshots' copies)
    for spec in specs:
        if component == "snapshots":
            plan += _expired(ec2, spec, keep)
            # Retention applies to the disaster-recovery copies too, by the same rules, in each destination.
            for region in spec.destination_regions:
                if region == ctx.metadata.region:
                    continue  # an instance in the destination: its own region is cleaned above, once
                elsewhere.setdefault(region, []).extend(_expired(ctx.ec2(region), spec, keep))
        else:
            available = [*tags.volume_filters(spec), {"Name": "status", "Values": ["available"]}]
            found = ec2.describe_volumes(filters=available)
            copies = ec2.describe_snapshots(tags.snapshot_filters(spec)) if found else []
            plan += clean.plan_volume_cleanup(spec, found, copies)
    if as_json and dry_run:
        print_json([d.as_dict() for d in plan] + [{**d.as_dict(), "region": r} for r, ds in elsewhere.items() for d in ds])
        return 0
    for d in plan:
        if d.keep:
            log.warning("keep %s", d.describe())
            if dry_run:
                print(f"keep {d.describe()}")
    doomed = [d for d in plan if not d.keep]
    for d in doomed:
        print(f"{'would delete' if dry_run else 'delete'} {d.describe()}")
    for region, deletions in sorted(elsewhere.items()):
        for d in deletions:
            print(f"{'would delete' if dry_run else 'delete'} in {region}: {d.describe()}")
    count = len(doomed) + sum(len(ds) for ds in elsewhere.values())
    if dry_run or not count:
        if not count:
            print(f"no {component} to clean")
        return 0
    if not force and not confirm(f"Delete {count} {component}?"):
        print("nothing done")
        return 1
    delete_all(ec2, doomed)
    for region, deletions in sorted(elsewhere.items()):
        delete_all(ctx.ec2(region), deletions)
    return 0


def _expired(ec2: Any, spec: Any, keep: int | None) -> list[Any]:
    """The snapshots retention deletes in one region, without those an AMI still uses."""
    found = clean.plan_snapshot_cleanup(spec, ec2.describe_snapshots(tags.snapshot_filters(spec)),
                                        keep if keep is not None else spec.retention.keep)
    in_use = ec2.images_using_snapshots([d.snapshot_id for d in found]) if found else {}
    return [d for d in found if d.snapshot_id not in in_use]
