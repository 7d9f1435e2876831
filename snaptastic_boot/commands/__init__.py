"""The commands: gather inputs (metadata, userdata, settings, EC2 state), build a plan, print it or apply it.

Everything the user can get wrong is checked before the first call that changes anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from snaptastic_boot.config import settings as settings_mod
from snaptastic_boot.config import userdata as userdata_mod
from snaptastic_boot.errors import AwsError, BadInput, EnvironmentNotUsable, SnaptasticError
from snaptastic_boot.system.imds import ImdsClient, InstanceMetadata
from snaptastic_boot.model import SnapshotterSpec
from snaptastic_boot.system.paths import Paths
from snaptastic_boot.snapshotter import Snapshotter
from snaptastic_boot.system.stopping import GracefulStop

log = logging.getLogger("snaptastic")

AUTH_FAILURES = ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                 "ExpiredToken", "RequestExpired", "AccessDenied", "OptInRequired")
REQUIRED_TOOLS = ("blkid", "mount", "umount", "fsfreeze", "mkfs.ext4", "resize2fs")
OPTIONAL_TOOLS = ("mkfs.xfs", "xfs_growfs")


@dataclass
class Context:
    paths: Paths
    imds: ImdsClient
    metadata: InstanceMetadata
    userdata: dict[str, Any]
    settings: settings_mod.Settings

    def snapshotter(self, name: str) -> tuple[Snapshotter, SnapshotterSpec]:
        snap = self.settings.snapshotter(name, self.userdata, self.metadata.as_dict())
        return snap, settings_mod.resolve(snap)

    def ec2(self) -> Any:
        from snaptastic_boot.ec2 import Ec2

        return Ec2(self.metadata.region)


def _context(args: argparse.Namespace) -> Context:
    settings = settings_mod.load(getattr(args, "config", None))
    imds = ImdsClient()
    metadata = imds.instance_metadata()
    if getattr(args, "userdata", None) is not None:
        raw: bytes | str | None = args.userdata
        source = "--userdata"
    else:
        raw = imds.user_data()
        source = "instance userdata"
    data = userdata_mod.parse(raw)
    log.debug("userdata from %s: %s", source, userdata_mod.redacted(data))
    return Context(Paths.from_env(), imds, metadata, data, settings)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _confirm(question: str) -> bool:
    """Ask on stderr, read one line from stdin (a terminal or a pipe); no answer at all is an error."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None and not sys.stdin.closed else ""
    if not line:
        raise BadInput(f"{question.rstrip('?')}: needs confirmation and nothing answered; add --yes/--force")
    return line.strip().lower() in ("y", "yes", "yeay")


# -- test -----------------------------------------------------------------------------------------------------


def test(args: argparse.Namespace) -> int:
    problems: list[str] = []
    settings = settings_mod.load(args.config)
    imds = ImdsClient()
    metadata = imds.instance_metadata()
    print(f"metadata service: {imds.base} (IMDS{imds.version or 'v2'})")
    for key, value in metadata.as_dict().items():
        print(f"  {key}: {value}")
    raw = args.userdata if args.userdata is not None else imds.user_data()
    try:
        data = userdata_mod.parse(raw)
        print("userdata:")
        for key, value in userdata_mod.redacted(data).items():
            print(f"  {key}: {value}")
    except BadInput as exc:
        print(f"userdata: PROBLEM: {exc}")
        problems.append("userdata")
        data = {}
    print(f"settings file: {settings.python_source or 'none'}")
    print(f"config file: {settings.config_source or 'none'}")
    print(f"snapshotters: {', '.join(settings.names) or 'none'}")
    for name in settings.names:
        try:
            _, spec = Context(Paths.from_env(), imds, metadata, data, settings).snapshotter(name)
            for v in spec.volumes:
                print(f"  {name}: {v.device} -> {v.mount_point} ({v.size} GiB {v.volume_type} {v.filesystem})")
        except BadInput as exc:
            print(f"  {name}: PROBLEM: {exc}")
            problems.append(name)
    try:
        from snaptastic_boot.ec2 import Ec2

        ec2 = Ec2(metadata.region)
        instance = ec2.describe_instance(metadata.instance_id)
        print(f"credentials: ok (EC2 in {metadata.region} sees {instance['InstanceId']}, {instance.get('State', {}).get('Name', '?')})")
    except AwsError as exc:
        if exc.code in AUTH_FAILURES:
            print(f"credentials: PROBLEM: {exc}")
            problems.append("credentials")
        else:  # EC2 answered, so the credentials work; the answer itself is worth showing
            print(f"credentials: ok (EC2 in {metadata.region} answered: {exc.code})")
    except SnaptasticError as exc:
        print(f"credentials: PROBLEM: {exc}")
        problems.append("credentials")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    optional = [t for t in OPTIONAL_TOOLS if shutil.which(t) is None]
    print(f"tools: {'ok' if not missing else 'MISSING ' + ', '.join(missing)}"
          f"{'; without xfs support (install xfsprogs): ' + ', '.join(optional) if optional else ''}")
    if missing or "credentials" in problems:
        raise EnvironmentNotUsable(f"not ready: {', '.join(problems + missing)}")
    if problems:
        raise BadInput(f"not ready: {', '.join(problems)}")
    print("all good")
    return 0


# -- list-volumes -----------------------------------------------------------------------------------------------


def list_volumes(args: argparse.Namespace) -> int:
    from snaptastic_boot.plan import restore
    from snaptastic_boot.system.devices import Devices
    ctx = _context(args)
    _, spec = ctx.snapshotter(args.name)
    ec2 = ctx.ec2()
    mount_points = [v.mount_point for v in spec.volumes]
    ours = ec2.describe_volumes(filters=restore.our_volume_filters(spec, ctx.metadata.instance_id))
    completed, pending = restore.newest_snapshots(ec2.describe_snapshots(restore.snapshot_filters(spec)), mount_points)
    devices = Devices(ctx.paths)
    rows = []
    for v in spec.volumes:
        current = restore.current_volume(ours, ctx.metadata.instance_id, v.mount_point, spec.filter_tags)
        mount = devices.mount_at(v.mount_point)
        snap = completed.get(v.mount_point)
        rows.append({
            "mount_point": v.mount_point,
            "device": v.device,
            "size": v.size,
            "volume_type": v.volume_type,
            "filesystem": v.filesystem,
            "volume_id": current["VolumeId"] if current else None,
            "volume_state": current["State"] if current else "none",
            "mounted": bool(mount),
            "newest_snapshot": snap["SnapshotId"] if snap else None,
            "newest_snapshot_time": str(snap["StartTime"]) if snap else None,
            "pending_snapshot": pending[v.mount_point]["SnapshotId"] if v.mount_point in pending else None,
        })
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        state = "mounted" if r["mounted"] else "not mounted"
        vol = f"{r['volume_id']} ({r['volume_state']})" if r["volume_id"] else "no volume"
        snap = f"{r['newest_snapshot']} at {r['newest_snapshot_time']}" if r["newest_snapshot"] else "no snapshot"
        print(f"EBSVolume on {r['mount_point']} from {r['device']} ({r['size']} GiB {r['volume_type']} {r['filesystem']}) "
              f"is {state}; {vol}; newest {snap}")
    return 0


# -- mount-snapshots, unmount-snapshots, make-snapshots ----------------------------------------------------------


@dataclass
class _Run:
    """Everything a command that changes the instance works with, checked before anything changes."""

    ctx: Context
    snapshotter: Snapshotter
    spec: SnapshotterSpec
    ec2: Any
    devices: Any

    @property
    def hook_volumes(self) -> dict[str, Any]:
        return {v.mount_point: v for v in self.snapshotter.get_volumes()}


def _start(args: argparse.Namespace) -> _Run:
    from snaptastic_boot.system.devices import Devices

    ctx = _context(args)
    snap, spec = ctx.snapshotter(args.name)
    return _Run(ctx, snap, spec, ctx.ec2(), Devices(ctx.paths))


def _show(plan: Any, args: argparse.Namespace) -> int:
    if args.json:
        _print_json(plan.as_dict())
    else:
        print(plan.render())
    return 0


def mount_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.system import lock
    from snaptastic_boot.plan import restore

    pins = restore.parse_pins(args.snapshot)
    before = restore.parse_time(args.before) if args.before else None
    run = _start(args)
    ec2, meta = run.ec2, run.ctx.metadata
    with lock.exclusive(run.ctx.paths.lock_file):
        snapshots = ec2.describe_snapshots(restore.snapshot_filters(run.spec))
        found = ec2.describe_snapshots([], snapshot_ids=list(pins.values())) if pins else []
        pinned = restore.check_pinned(run.spec, pins, found, args.force)
        ours = ec2.describe_volumes(filters=restore.our_volume_filters(run.spec, meta.instance_id))
        plan = restore.plan_restore(run.spec, meta.instance_id, meta.availability_zone, snapshots, ours,
                                    run.devices.mounts(), pinned=pinned, before=before)
        if args.dry_run:
            return _show(plan, args)
        for step in plan.steps:
            log.info("plan: %s", step.describe())
        with GracefulStop() as stop:
            restorer = restore.Restorer(ec2, run.devices, run.ctx.paths.fstab, hooks=run.snapshotter, stop=stop)
            report = restorer.apply(plan, run.hook_volumes)
    log.info("mount-snapshots done in %.1fs with %d EC2 API calls (%s)", report.seconds, ec2.total_calls,
             ", ".join(f"{k} {v}" for k, v in sorted(ec2.calls.items())))
    if args.json:
        _print_json(report.as_dict())
        return 0
    for r in report.volumes:
        what = "formatted, " if r.formatted else ""
        source = f"from {r.snapshot_id}" if r.snapshot_id else "empty" if r.action == restore.CREATE else r.action
        print(f"{r.mount_point}: {r.volume_id} on {r.local_device} ({what}{source})")
    return 0


def unmount_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.system import lock
    from snaptastic_boot.plan import restore
    from snaptastic_boot.plan import unmount

    run = _start(args)
    instance_id = run.ctx.metadata.instance_id
    with lock.exclusive(run.ctx.paths.lock_file):
        ours = run.ec2.describe_volumes(filters=restore.our_volume_filters(run.spec, instance_id))
        plan = unmount.plan_unmount(run.spec, instance_id, ours, run.devices.mounts(), delete=args.delete)
        if args.dry_run:
            return _show(plan, args)
        mount_points = ", ".join(v.mount_point for v in run.spec.volumes)
        question = f"Unmount and detach {mount_points}{' and DELETE the volumes' if args.delete else ''}?"
        if not args.yes and not _confirm(question):
            print("nothing done")
            return 1
        report = unmount.Unmounter(run.ec2, run.devices, run.ctx.paths.fstab, hooks=run.snapshotter).apply(plan, run.hook_volumes)
    if args.json:
        _print_json(report)
        return 0
    for line in report["done"]:
        print(line)
    return 0


def make_snapshots(args: argparse.Namespace) -> int:
    from snaptastic_boot.system import lock
    from snaptastic_boot.plan import snapshot as snapshots

    run = _start(args)
    with lock.exclusive(run.ctx.paths.lock_file):
        instance = run.ec2.describe_instance(run.ctx.metadata.instance_id)
        plan = snapshots.plan_snapshots(run.spec, snapshots.description(run.snapshotter, run.spec), instance,
                                        run.devices.mounts(), snapshots.local_devices(run.devices, instance),
                                        freeze=not args.no_freeze)
        volumes = run.ec2.describe_volumes(volume_ids=[t.volume_id for t in plan.targets])
        plan = snapshots.with_missing_tags(plan, run.spec.filter_tags, volumes)
        if args.dry_run:
            return _show(plan, args)
        report = snapshots.Snapshotting(run.ec2, run.devices, hooks=run.snapshotter).apply(plan, run.hook_volumes, wait=args.wait)
    if args.json:
        _print_json(report.as_dict())
        return 0
    for mp, snap_id in sorted(report.snapshots.items()):
        print(f"{mp}: {snap_id}")
    print(f"frozen for {report.freeze_ms:.0f} ms")
    return 0


# -- clean and check-backups ------------------------------------------------------------------------------------


def clean(args: argparse.Namespace) -> int:
    from snaptastic_boot.plan import clean as retention

    ctx = _context(args)
    # Without a name (as the original `snaptastic clean snapshots`), every configured snapshotter.
    specs = [ctx.snapshotter(name)[1] for name in ([args.name] if args.name else ctx.settings.names)]
    if not specs:
        raise BadInput("clean: no snapshotters are configured; nothing is ever cleaned without a snapshotter's tags")
    ec2 = ctx.ec2()
    plan: list[Any] = []
    for spec in specs:
        if args.component == "snapshots":
            keep = args.keep if args.keep is not None else spec.retention.keep
            found = retention.plan_snapshot_cleanup(spec, ec2.describe_snapshots(retention.snapshot_filters(spec)), keep)
            in_use = ec2.images_using_snapshots([d.snapshot_id for d in found])
            plan += [d for d in found if d.snapshot_id not in in_use]
        else:
            plan += retention.plan_volume_cleanup(spec, ec2.describe_volumes(filters=retention.volume_filters(spec)))
    if args.json and args.dry_run:
        _print_json([d.as_dict() for d in plan])
        return 0
    for d in plan:
        print(f"{'would delete' if args.dry_run else 'delete'} {d.describe()}")
    if args.dry_run or not plan:
        if not plan:
            print(f"no {args.component} to clean")
        return 0
    if not args.force and not _confirm(f"Delete {len(plan)} {args.component}?"):
        print("nothing done")
        return 1
    retention.apply(ec2, plan)
    return 0


def check_backups(args: argparse.Namespace) -> int:
    from snaptastic_boot.plan import backups

    max_age = backups.parse_age(args.age)
    ctx = None
    given = {k: getattr(args, k) for k in ("role", "cluster", "environment") if getattr(args, k)}
    if len(given) < 3:
        ctx = _context(args)
        wanted = {**{k: ctx.userdata.get(k) for k in ("role", "cluster", "environment")}, **given}
        region = ctx.metadata.region
    else:
        # All tags given: this may run on a monitoring host, where the standard region variables say where.
        wanted = given
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ImdsClient().instance_metadata().region
    missing = [k for k, v in wanted.items() if not v]
    if missing:
        raise BadInput(f"check-backups: --{missing[0]} is needed (not in userdata either)")
    from snaptastic_boot.ec2 import Ec2

    ec2 = Ec2(region)
    filters = backups.filters(wanted)
    result = backups.evaluate(ec2.describe_volumes(filters=[*filters, {"Name": "status", "Values": ["in-use"]}]),
                              ec2.describe_snapshots(filters), max_age)
    if args.json:
        _print_json([r.as_dict() for r in result])
    else:
        for r in result:
            print(r.line())
        if not result:
            print("UNKNOWN: no in-use volumes with these tags")
    return 0 if result and all(r.ok for r in result) else 1
