"""A filesystem smaller than its volume is grown by whichever later run finds it, not only by the restore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.lab.agent import configure, ok, volumes

GIB = 1 << 30


def fs_bytes(mount_point: Path) -> int:
    st = os.statvfs(mount_point)
    return st.f_blocks * st.f_frsize


def restored_bigger(lab: Any, filesystem: str) -> Path:
    """A 1 GiB volume with a snapshot, then a new instance whose config asks for 3 GiB."""
    configure(lab, volumes(lab, 1, filesystem=filesystem))
    mp = lab.mount_root / "data0"
    ok(lab.run("mount-snapshots", "solr"))
    (mp / "kept").write_text("data")
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    configure(lab, volumes(lab, 1, size=3, filesystem=filesystem))
    lab.new_instance()
    return mp


def test_an_xfs_grow_that_failed_is_done_by_the_next_run(lab: Any) -> None:
    mp = restored_bigger(lab, "xfs")
    tools = Path(lab.workdir) / "failing-tools"
    tools.mkdir()
    (tools / "xfs_growfs").write_text("#!/bin/sh\necho 'xfs_growfs: refused for the test' >&2\nexit 1\n")
    (tools / "xfs_growfs").chmod(0o755)
    first = ok(lab.run("mount-snapshots", "solr", env={**lab.env, "PATH": f"{tools}:{os.environ['PATH']}"}))
    assert "could not grow the filesystem" in first.stderr and fs_bytes(mp) < 1.5 * GIB
    second = ok(lab.run("mount-snapshots", "solr"))  # the volume is mounted: a rerun, or the next boot
    assert "growing the filesystem" in second.stderr and fs_bytes(mp) > 2.5 * GIB
    assert (mp / "kept").read_text() == "data"
    third = ok(lab.run("mount-snapshots", "solr"))
    assert "growing the filesystem" not in third.stderr


def test_an_ext4_grow_is_tried_by_every_run_while_it_is_refused(lab: Any) -> None:
    mp = restored_bigger(lab, "ext4")
    for _ in range(2):
        result = ok(lab.run("mount-snapshots", "solr"))
        small = fs_bytes(mp) < 1.5 * GIB
        # Online ext4 resize needs CAP_SYS_RESOURCE; where root has it, the first run grows and that is that.
        assert ("could not grow the filesystem" in result.stderr) == small
    assert (mp / "kept").read_text() == "data"
