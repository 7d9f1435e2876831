"""snaptastic-boot: restore EBS volumes from tagged snapshots at boot, snapshot them at shutdown.

`Snapshotter` and `EBSVolume` are the settings-file API of the original snaptastic; they are imported lazily
so that `snaptastic --version` and `--help` stay free of heavy imports.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["EBSVolume", "Snapshotter", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Snapshotter", "EBSVolume"):
        from snaptastic_boot import snapshotter

        return getattr(snapshotter, name)
    raise AttributeError(f"module 'snaptastic_boot' has no attribute {name!r}")
