"""The settings-file hooks of a snapshotter (`pre_mounts`, `pre_mount`, ...), called as the original did.

The hooks take the snapshotter's own `EBSVolume` objects, found by mount point; a JSON-configured snapshotter
has hooks that do nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Hooks:
    def __init__(self, snapshotter: Any = None) -> None:
        self._target = snapshotter
        self._volumes: dict[str, Any] = (
            {v.mount_point: v for v in snapshotter.get_volumes()} if snapshotter is not None else {}
        )

    def before(self, kind: str, mount_points: Sequence[str]) -> None:
        """`pre_<kind>s` with all volumes, then `pre_<kind>` with each."""
        self.call_all(f"pre_{kind}s", mount_points)
        for mp in mount_points:
            self.call_one(f"pre_{kind}", mp)

    def after(self, kind: str, mount_points: Sequence[str]) -> None:
        """`post_<kind>` with each volume, then `post_<kind>s` with all."""
        for mp in mount_points:
            self.call_one(f"post_{kind}", mp)
        self.call_all(f"post_{kind}s", mount_points)

    def call_all(self, name: str, mount_points: Sequence[str]) -> None:
        if self._target is not None:
            getattr(self._target, name)([self._volumes[mp] for mp in mount_points if mp in self._volumes])

    def call_one(self, name: str, mount_point: str) -> None:
        if self._target is not None and mount_point in self._volumes:
            getattr(self._target, name)(self._volumes[mount_point])
