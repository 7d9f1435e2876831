"""The device adapter: everything the agent does to this host's block devices, mounts and freezes.

`Devices` is the real implementation of `interfaces.DeviceAdapter`, delegating to `blockdev`, `mounts` and
`fsfreeze`. Unit tests drive the apply layer with an in-memory implementation.
"""

from __future__ import annotations

from snaptastic_boot.system import fsfreeze
from snaptastic_boot.system import mounts as mount_table
from snaptastic_boot.system.blockdev import BlockDevices
from snaptastic_boot.system.paths import Paths


class Devices(BlockDevices):
    """Block devices of `paths`, plus this host's mount table and freezes."""

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)

    mounts = staticmethod(mount_table.mounts)
    mount_at = staticmethod(mount_table.mount_at)
    mount = staticmethod(mount_table.mount)
    umount = staticmethod(mount_table.umount)
    wait_released = staticmethod(mount_table.wait_released)
    entries = staticmethod(mount_table.entries)
    xfs_uuid_in_use = staticmethod(mount_table.xfs_uuid_in_use)
    flush = staticmethod(fsfreeze.flush)
    freeze = staticmethod(fsfreeze.freeze)
    thaw = staticmethod(fsfreeze.thaw)
