"""Tags: the contract between runs, with old snaptastic snapshots, and the one rule for what is ours.

A snapshot or volume belongs to a snapshotter when it carries every one of the snapshotter's filter tags with
the same value (and a `mount_point`). Server-side filters narrow what EC2 returns; `belongs` decides, so a
filter that EC2 ignored or widened can never make the agent touch someone else's resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snaptastic_boot.model import SnapshotterSpec

# The identity of an instance in its userdata, and the default filter tags of a snapshotter.
IDENTITY_KEYS = ("role", "cluster", "environment")

MOUNT_POINT = "mount_point"
INSTANCE_ID = "instance_id"
CREATED = "created"
EXPIRES = "expires"
# The same on every snapshot that one make-snapshots run took together (see plan/sets.py).
SNAPSHOT_SET = "snapshot_set"
# Set by unmount-snapshots on volumes it detached on purpose: never reattached, left for `clean volumes`.
DETACHED = "detached"
# On a copy of a snapshot in another region (copy-snapshots): the snapshot it copies, and that one's region.
SOURCE_SNAPSHOT_ID = "source_snapshot_id"
SOURCE_REGION = "source_region"

Tags = dict[str, str]


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tags_of(resource: Mapping[str, Any]) -> Tags:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def tag_filters(tags: Mapping[str, Sequence[str] | str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{k}", "Values": [v] if isinstance(v, str) else list(v)} for k, v in sorted(tags.items())]


def belongs(resource: Mapping[str, Any], wanted: Mapping[str, str], present: Iterable[str] = (MOUNT_POINT,)) -> bool:
    """Whether the resource carries every wanted tag with its value, and the keys in `present` at all."""
    tags = tags_of(resource)
    return all(tags.get(k) == v for k, v in wanted.items()) and all(k in tags for k in present)


def snapshot_filters(spec: SnapshotterSpec) -> list[dict[str, Any]]:
    """This snapshotter's snapshots: its filter tags and one of its mount points."""
    return tag_filters({**spec.filter_tags, MOUNT_POINT: [v.mount_point for v in spec.volumes]})


def volume_filters(spec: SnapshotterSpec, instance_id: str | None = None) -> list[dict[str, Any]]:
    """This snapshotter's volumes (made for `instance_id` when given, else for any instance)."""
    wanted: dict[str, Sequence[str] | str] = {**spec.filter_tags, MOUNT_POINT: [v.mount_point for v in spec.volumes]}
    if instance_id is not None:
        wanted[INSTANCE_ID] = instance_id
        return tag_filters(wanted)
    return [*tag_filters(wanted), {"Name": "tag-key", "Values": [INSTANCE_ID]}]
