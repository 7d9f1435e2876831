"""The settings-file API of the original snaptastic: `Snapshotter` subclasses and `EBSVolume`.

A settings file written for the original tool keeps working:

    from snaptastic_boot import Snapshotter, EBSVolume

    class SolrSnapshotter(Snapshotter):
        name = 'solr'

        def get_volumes(self):
            return [EBSVolume('/dev/sdf', '/mnt/solr', size=20)]

Subclasses register themselves by `name`. The agent turns an instance into a `SnapshotterSpec` (see `spec`),
so the Python and JSON forms feed the same planning code; hooks are called around the same steps as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from snaptastic_boot import model
from snaptastic_boot.model import Retention, SnapshotterSpec, VolumeSpec

REGISTRY: dict[str, type[Snapshotter]] = {}


class EBSVolume:
    """A volume a snapshotter wants: device name, mount point, size in GiB and how to make it."""

    def __init__(
        self,
        device: str,
        mount_point: str,
        size: int = model.DEFAULT_SIZE,
        delete_on_termination: bool = model.DEFAULT_DELETE_ON_TERMINATION,
        file_system: Any = model.DEFAULT_FILESYSTEM,
        mount_options: str = model.DEFAULT_MOUNT_OPTIONS,
        iops: int | None = None,
        volume_type: str = model.DEFAULT_VOLUME_TYPE,
        throughput: int | None = None,
        encrypted: bool = False,
        kms_key_id: str | None = None,
        initialization_rate: int | None = None,
        filesystem: str | None = None,
    ) -> None:
        self.device = device
        self.mount_point = mount_point
        self.size = size
        self.delete_on_termination = delete_on_termination
        # The original took a class with a `name` attribute (FILESYSTEMS.XFS); a plain string works too.
        fs = filesystem if filesystem is not None else file_system
        self.file_system = str(getattr(fs, "name", fs)).lower()
        self.mount_options = mount_options
        self.iops = iops
        self.volume_type = volume_type
        self.throughput = throughput
        self.encrypted = encrypted
        self.kms_key_id = kms_key_id
        self.initialization_rate = initialization_rate

    def __repr__(self) -> str:
        return f"EBSVolume({self.device!r}, {self.mount_point!r}, size={self.size})"

    def spec(self) -> VolumeSpec:
        return VolumeSpec(
            device=self.device,
            mount_point=self.mount_point,
            size=self.size,
            filesystem=self.file_system,
            volume_type=self.volume_type,
            iops=self.iops,
            throughput=self.throughput,
            encrypted=self.encrypted,
            kms_key_id=self.kms_key_id,
            mount_options=self.mount_options,
            delete_on_termination=self.delete_on_termination,
            initialization_rate=self.initialization_rate,
        )


class Snapshotter:
    """Subclass this in a settings file; override `get_volumes` and, if needed, `get_filter_tags` and hooks."""

    name: ClassVar[str | None] = None
    SNAPSHOT_EXPIRY_DAYS: ClassVar[float] = model.DEFAULT_EXPIRY_DAYS
    KEEP_SNAPSHOTS: ClassVar[int] = model.DEFAULT_KEEP
    PENDING_SNAPSHOT_WAIT: ClassVar[float] = model.DEFAULT_PENDING_SNAPSHOT_WAIT
    # Example: "solr-prod snapshot of /mnt/solr"
    SNAPSHOT_DESCRIPTION_FORMAT: ClassVar[str] = model.DEFAULT_DESCRIPTION_FORMAT
    # False when the mount points are unrelated and may be restored from different points in time.
    CONSISTENT_RESTORE: ClassVar[bool] = model.DEFAULT_CONSISTENT_RESTORE
    # True: at boot, first reattach the volumes a replaced instance left in this zone (needs
    # delete_on_termination=False on every volume).
    REUSE_VOLUMES: ClassVar[bool] = model.DEFAULT_REUSE_VOLUMES
    # Regions that get a copy of every complete snapshot set, for disaster recovery (copy-snapshots); the
    # capitalised spelling of the other settings is taken too (the lower-case one wins when both are set).
    destination_regions: ClassVar[Sequence[str]] = model.DEFAULT_DESTINATION_REGIONS
    DESTINATION_REGIONS: ClassVar[Sequence[str]] = model.DEFAULT_DESTINATION_REGIONS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            REGISTRY[name] = cls

    def __init__(
        self,
        userdata: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        connection: Any = None,
        bdm: Any = None,
    ) -> None:
        self.userdata: dict[str, Any] = dict(userdata or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.con = connection
        self.bdm = bdm

    # -- what to customise ---------------------------------------------------------------------------------

    def get_volumes(self) -> list[EBSVolume]:
        raise NotImplementedError(f"{type(self).__name__}.get_volumes() must return a list of EBSVolume")

    def get_filter_tags(self) -> dict[str, str]:
        """Tags that find this snapshotter's snapshots; mount_point is always added."""
        return {key: self.userdata[key] for key in model.DEFAULT_FILTER_KEYS}

    def get_snapshot_description(self, vol: EBSVolume) -> str:
        values = {**self.userdata, "mount_point": vol.mount_point}
        try:
            return (self.SNAPSHOT_DESCRIPTION_FORMAT % values).replace("_", "-")
        except (KeyError, ValueError, TypeError):
            return f"snapshot of {vol.mount_point}"

    # -- hooks, called as in the original ------------------------------------------------------------------

    def pre_mounts(self, volumes: list[EBSVolume]) -> None: ...

    def post_mounts(self, volumes: list[EBSVolume]) -> None: ...

    def pre_mount(self, vol: EBSVolume) -> None: ...

    def post_mount(self, vol: EBSVolume) -> None: ...

    def pre_unmounts(self, volumes: list[EBSVolume]) -> None: ...

    def post_unmounts(self, volumes: list[EBSVolume]) -> None: ...

    def pre_unmount(self, vol: EBSVolume) -> None: ...

    def post_unmount(self, vol: EBSVolume) -> None: ...

    def pre_snapshots(self, volumes: list[EBSVolume]) -> None: ...

    def post_snapshots(self, volumes: list[EBSVolume]) -> None: ...

    def pre_snapshot(self, vol: EBSVolume) -> None: ...

    def post_snapshot(self, vol: EBSVolume) -> None: ...

    # -- shortcuts kept from the original ------------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        return str(self.metadata.get("instance-id", ""))

    @property
    def availability_zone(self) -> str:
        return str(self.metadata.get("availability-zone", ""))

    def spec(self) -> SnapshotterSpec:
        """The plain-data view the planner works from (validated by the caller)."""
        return SnapshotterSpec(
            name=str(self.name),
            volumes=tuple(v.spec() for v in self.get_volumes()),
            filter_tags={str(k): str(v) for k, v in self.get_filter_tags().items()},
            retention=Retention(days=self.SNAPSHOT_EXPIRY_DAYS, keep=self.KEEP_SNAPSHOTS),
            pending_snapshot_wait=self.PENDING_SNAPSHOT_WAIT,
            description_format=self.SNAPSHOT_DESCRIPTION_FORMAT,
            consistent_restore=self.CONSISTENT_RESTORE,
            reuse_volumes=self.REUSE_VOLUMES,
            destination_regions=self._destination_regions(),
        )

    def _destination_regions(self) -> tuple[str, ...]:
        regions = self.destination_regions or self.DESTINATION_REGIONS
        # A single name written without a list would otherwise become one region per letter.
        return (regions,) if isinstance(regions, str) else tuple(regions)


class ConfiguredSnapshotter(Snapshotter):
    """A snapshotter described by the JSON config instead of Python code (not registered by class)."""

    def __init__(self, config_name: str, entry: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_name = config_name
        self.entry = entry

    @property  # type: ignore[override]
    def name(self) -> str:  # type: ignore[override]
        return self.config_name

    def get_volumes(self) -> list[EBSVolume]:
        return [EBSVolume(**vol) for vol in self.entry["volumes"]]

    def get_filter_tags(self) -> dict[str, str]:
        return {key: self.userdata[key] for key in self.filter_keys()}

    def filter_keys(self) -> list[str]:
        return list(self.entry.get("filter_tags", model.DEFAULT_FILTER_KEYS))

    def spec(self) -> SnapshotterSpec:
        retention = self.entry.get("retention", {})
        return replace(
            super().spec(),
            retention=Retention(days=retention.get("days", self.SNAPSHOT_EXPIRY_DAYS), keep=retention.get("keep", self.KEEP_SNAPSHOTS)),
            pending_snapshot_wait=self.entry.get("pending_snapshot_wait", self.PENDING_SNAPSHOT_WAIT),
            consistent_restore=self.entry.get("consistent_restore", self.CONSISTENT_RESTORE),
            reuse_volumes=self.entry.get("reuse_volumes", self.REUSE_VOLUMES),
            destination_regions=tuple(self.entry.get("destination_regions", self._destination_regions())),
        )
