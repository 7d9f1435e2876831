"""Every text the agent says to its user when it stops: one line naming what is wrong and how to fix it.

Kept together so that the wording stays consistent and a reader can review every promise in one place.
Errors carry these texts; the CLI prints them as `snaptastic: error: <text>`.
"""

from __future__ import annotations

from collections.abc import Sequence

# -- command line ------------------------------------------------------------------------------------------


def usage(prog: str, message: str) -> str:
    return f"{prog}: {message} (see '{prog} --help')"


def no_answer(question: str) -> str:
    return f"{question.rstrip('?')}: needs confirmation and nothing answered; add --yes/--force"


def bad_age(text: str) -> str:
    return f"--age: '{text}' is not an age; use a number with s, m, h, d or w, like 1d or 12h"


def bad_before(value: str) -> str:
    return f"--before: '{value}' is not a timestamp; use ISO 8601 like 2026-11-27T16:00:00Z"


def bad_pin(value: str) -> str:
    return f"--snapshot: '{value}' must look like /mnt/solr=snap-0123456789abcdef0"


def pin_not_configured(mount_point: str, snapshotter: str, configured: Sequence[str]) -> str:
    return f"--snapshot: {mount_point} is not a mount point of snapshotter '{snapshotter}' ({', '.join(sorted(configured))})"


def pin_not_found(snapshot_id: str) -> str:
    return f"--snapshot: {snapshot_id} not found among this account's snapshots"


def pin_not_completed(snapshot_id: str, state: str) -> str:
    return f"--snapshot: {snapshot_id} is {state}, not completed"


def pin_foreign(snapshot_id: str, shown: str) -> str:
    return f"--snapshot: {snapshot_id} belongs elsewhere ({shown}); add --force to restore it anyway"


def keep_at_least_one(text: str) -> str:
    return f"'{text}' is not a whole number of at least 1; the newest K snapshots are always kept, and fewer than 1 would let every snapshot go"


def bad_tag(value: str) -> str:
    return f"--tag: '{value}' must look like KEY=VALUE, e.g. --tag service=search"


def check_backups_tag_missing(key: str) -> str:
    return f"check-backups: --{key} is needed (not in userdata either)"


CLEAN_NOTHING_CONFIGURED = "clean: no snapshotters are configured; nothing is ever cleaned without a snapshotter's tags"


def not_ready(problems: Sequence[str]) -> str:
    return f"not ready: {', '.join(problems)}"


# -- userdata ----------------------------------------------------------------------------------------------

USERDATA_MISSING = "userdata: missing; give the instance JSON userdata with role, cluster and environment, or pass --userdata"
USERDATA_GZIP_TRUNCATED = "userdata: gzip data is corrupt (truncated); compress the JSON with gzip or send it plain"
USERDATA_NO_JSON_PART = ("userdata: the MIME multi-part archive has no JSON part; add an application/json part with role, "
                         "cluster and environment")
USERDATA_TWO_JSON_PARTS = "userdata: the MIME multi-part archive has more than one JSON part; keep exactly one"


def userdata_gzip_corrupt(reason: object) -> str:
    return f"userdata: gzip data is corrupt ({reason}); compress the JSON with gzip or send it plain"


def userdata_too_big(limit_kib: int) -> str:
    return f"userdata: gzip data expands beyond {limit_kib} KiB; send a smaller JSON object"


def not_utf8(where: str) -> str:
    return f"{where}: not UTF-8 text; userdata must be a JSON object (optionally gzip-compressed)"


def not_json(where: str, msg: str, line: int, column: int) -> str:
    return f"{where}: not valid JSON ({msg} at line {line} column {column}); write a JSON object like {{\"role\": \"solr\", ...}}"


def not_an_object(where: str, kind: str) -> str:
    return f"{where}: must be a JSON object, not {kind}; write {{\"role\": ..., \"cluster\": ..., \"environment\": ...}}"


def userdata_key_missing(key: str, snapshotter: str) -> str:
    return f"userdata.{key}: missing; snapshotter '{snapshotter}' filters on it"


# -- settings and config -----------------------------------------------------------------------------------


def snapshotter_unknown(name: str, close: str | None, known: Sequence[str], where: str) -> str:
    hint = f"did you mean '{close}'? " if close else ""
    return f"snapshotter '{name}' is not defined; {hint}known: {', '.join(known) or 'none'} (from {where})"


def defined_twice(names: Sequence[str], python_source: str | None, config_source: str | None) -> str:
    return f"snapshotter {', '.join(names)} is defined both in {python_source} and in {config_source}; keep one"


def settings_unloadable(path: object) -> str:
    return f"settings file {path} cannot be loaded"


def settings_failed(where: str, problem: str) -> str:
    return f"{where} failed to load: {problem}"


def config_not_found(path: object) -> str:
    return f"config: {path} not found; create it or point --config/SNAPTASTIC_CONFIG at the right file"


def config_not_utf8(path: object, offset: int) -> str:
    return f"config: {path} is not UTF-8 text (byte {offset}); save it as UTF-8"


def config_unreadable(path: object, reason: str) -> str:
    return f"config: cannot read {path}: {reason}"


def config_not_json(path: object, msg: str, line: int, column: int) -> str:
    return f"config: {path} is not valid JSON ({msg} at line {line} column {column})"


def filter_tags_with_mount_point(snapshotter: str) -> str:
    return f"snapshotter '{snapshotter}': get_filter_tags() must not return mount_point; it is added per volume"


def no_volumes(snapshotter: str) -> str:
    return f"snapshotter '{snapshotter}': get_volumes() returned no volumes"


def nothing_to_snapshot(snapshotter: str) -> str:
    return f"snapshotter '{snapshotter}' has no volumes to snapshot"


# -- environment -------------------------------------------------------------------------------------------

NO_CREDENTIALS = ("no AWS credentials found: attach an instance profile (IAM role) to the instance, "
                  "or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
IMDS_NO_IDENTITY = "the metadata service has no instance-id or availability zone for this instance"
IMDS_TOKEN_REFUSED = "metadata service refused a token (403): IMDS may be disabled for this instance"


def partial_credentials(detail: str) -> str:
    return (f"AWS credentials are incomplete ({detail}); set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or neither to use the instance profile")


def no_credentials_for(action: str) -> str:
    return f"EC2 {action}: no AWS credentials found; attach an instance profile"


def imds_refused(path: str) -> str:
    return f"metadata service refused {path} (403): IMDS may be disabled for this instance"


def imds_no_answer(base: str, path: str, seconds: float, errors: Sequence[str]) -> str:
    return (f"metadata service at {base} did not answer {path} in {seconds:.0f}s ({', then '.join(errors)}); "
            "is this an EC2 instance? (set AWS_EC2_METADATA_SERVICE_ENDPOINT to use another endpoint)")


def imds_bad_identity(problem: object) -> str:
    return f"instance identity document is not usable: {problem!r}"


def tool_missing(program: str) -> str:
    return f"required program '{program}' not found on PATH; install it (util-linux, e2fsprogs, xfsprogs)"


def lock_unopenable(path: object, reason: str) -> str:
    return f"cannot open lock file {path}: {reason}"


def lock_held(path: object) -> str:
    return f"another snaptastic run holds {path}; wait for it to finish"


# -- operations --------------------------------------------------------------------------------------------


def ec2_failed(action: str, detail: object) -> str:
    return f"EC2 {action} failed: {detail}"


def instance_not_found(instance_id: str) -> str:
    return f"EC2 DescribeInstances: instance {instance_id} not found"


def stopped(signal_name: str, done: str) -> str:
    return f"stopped by {signal_name} after {done}; run the command again to finish"


def wait_failed(what: str, label: str, reason: str) -> str:
    return f"{what}: {label} {reason}"


def wait_gave_up(what: str, limit: float, labels: Sequence[str]) -> str:
    return f"{what}: gave up after {limit:.0f}s waiting for {', '.join(labels)}"


def pending_snapshot_timeout(wait_error: object) -> str:
    return f"{wait_error}; restore an older snapshot with --snapshot MOUNT=SNAP_ID or raise pending_snapshot_wait"


def no_block_device(wait_error: object) -> str:
    return f"{wait_error}: the volume is attached in EC2 but no block device appeared; check the kernel log; a rerun reuses the volume"


def no_snapshot_returned(mount_points: Sequence[str]) -> str:
    return f"EC2 returned no snapshot for {', '.join(mount_points)}"


def cannot(what: str, target: object, reason: str | None) -> str:
    return f"cannot {what} {target}: {reason}"


# -- refusals that protect data ----------------------------------------------------------------------------


def restored_without_filesystem(path: object, volume_id: str, mount_point: str) -> str:
    return (f"{path} ({volume_id}) restored for {mount_point} has no filesystem; "
            "refusing to format a volume made from a snapshot")


def unknown_contents(path: object, volume_id: str, mount_point: str, fstype: str) -> str:
    what = "data without a known filesystem" if fstype == "unknown-data" else f"a {fstype} filesystem"
    return f"{path} ({volume_id}) for {mount_point} holds {what}; refusing to format or mount it"


def not_blank(path: object, volume_id: str) -> str:
    return f"{path} ({volume_id}) is not blank; refusing to format it"


def mounted_from_elsewhere(mount_point: str, source: str) -> str:
    return f"{mount_point} is already mounted from {source}; unmount it first"


def mounted_elsewhere(mount_point: str, source: str, holder: str) -> str:
    return (f"{mount_point}: unmounted here, but {source} is still mounted or in use elsewhere ({holder}, for "
            "example a container or a service with mounts of its own); unmount it there, then run again")


def mounted_not_ours(mount_point: str, source: str) -> str:
    return (f"{mount_point} is already mounted from {source}, which is not a volume this agent made for "
            "this instance; unmount it first")


def mounted_not_from(mount_point: str, volume_id: str) -> str:
    return f"{mount_point} is mounted, but not from {volume_id}; unmount it first"


def serial_unreadable(path: object, volume_id: str, reason: str | None) -> str:
    return f"cannot read the serial of {path} to check it is {volume_id}: {reason}"


def wrong_volume(path: object, found: str | None, volume_id: str) -> str:
    return f"{path} is volume {found}, not {volume_id}; refusing to touch it"


def device_taken(mount_point: str, device: str, volume_id: str) -> str:
    return (f"{mount_point}: device {device} is already in use on this instance by {volume_id}, which is not this "
            "snapshotter's volume for it; choose another device in the config (/dev/sdf to /dev/sdp)")


def no_complete_set(mount_point: str, snapshotter: str) -> str:
    return (f"{mount_point}: no complete snapshot set of snapshotter '{snapshotter}' to restore it from (see the "
            "warnings above); restore a chosen snapshot with --snapshot MOUNT=SNAP_ID, or set consistent_restore false")


def pending_limit(mount_point: str, volume_id: str, limit: int, pending: Sequence[str]) -> str:
    return (f"{mount_point}: volume {volume_id} already has {len(pending)} pending snapshot(s) ({', '.join(pending)}), "
            f"the most EBS allows for it ({limit}); nothing was frozen; the next run tries again once they complete")


def fstab_unusable(path: object, why: str) -> str:
    return (f"{path} cannot be kept byte for byte ({why}); nothing was changed; fix the file or point "
            "SNAPTASTIC_FSTAB at the real one")


def fstab_unwritable(path: object, why: str | None) -> str:
    return f"cannot write {path}: {why}; the old file is unchanged"


def not_mounted(mount_point: str) -> str:
    return f"{mount_point} is not mounted; nothing to snapshot (run mount-snapshots first)"


def released_by_watch(name: str) -> str:
    return (f"nothing to snapshot for {name}: snaptastic watch snapshotted its volumes and released them for the "
            "replacement instance after a termination notice at this boot")


def root_filesystem(mount_point: str) -> str:
    return f"{mount_point} is the root filesystem; refusing to freeze it"


def not_an_attached_volume(mount_point: str, source: str, instance_id: str) -> str:
    return f"{mount_point} is mounted from {source}, which is not an EBS volume attached to {instance_id}"


def boot_volume(mount_point: str, volume_id: str) -> str:
    return f"{mount_point} is on the boot volume {volume_id}; refusing to freeze it"


# -- watch: Spot and Auto Scaling notices -------------------------------------------------------------------


def imds_poll_failed(path: str, why: str) -> str:
    return f"metadata service did not answer {path}: {why}"


def bad_region(text: str) -> str:
    return f"{text!r} is not an AWS region name; give one like us-west-2"


def bad_interval(value: str) -> str:
    return f"{value!r} is not a number of seconds from 0.1 to 60 (the default 5 leaves time in a two-minute notice)"


def autoscaling_failed(action: str, why: object) -> str:
    return f"Auto Scaling {action} failed: {why}"


def no_autoscaling_group(instance_id: str) -> str:
    return (f"{instance_id} carries no aws:autoscaling:groupName tag: it is not in an Auto Scaling group, so no "
            "lifecycle action can be completed (drop --lifecycle-hook, or attach the instance to its group)")


def watch_state_unwritable(path: object, why: str | None) -> str:
    return f"cannot record handled notices in {path}: {why}; a restarted watch may act on the same notice again"
