"""A file system also mounted in another mount namespace (a container, a service with mounts of its own) lives on
after unmount-snapshots unmounts it here: its snapshot must still hold every byte written, and the volume must not
be pulled from under the other mount."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

from snaptastic_lab.namespace import own_namespace_argv
from tests.lab.agent import configure, ok, our_volumes, volumes
from tests.lab.test_hardening import one_line_error


def other_namespace(lab: Any) -> subprocess.Popen[bytes]:
    """A process holding a copy of this lab's mounts, as a container started now would (not of other tests'
    labs, which it would hold on to in the same way)."""
    holder = subprocess.Popen(own_namespace_argv(["sleep", "120"], keep=lab.mount_root))
    time.sleep(0.3)
    return holder


def test_data_written_before_the_unmount_is_in_its_snapshot(lab: Any) -> None:
    configure(lab, volumes(lab, 1, filesystem="xfs"))
    mp = lab.mount_root / "data0"
    ok(lab.run("mount-snapshots", "solr"))
    holder = other_namespace(lab)
    (mp / "kept").write_text("data")  # dirty in memory: only the flush before the unmount writes it out
    # Let go of while the agent waits, as a container that was only starting does.
    threading.Timer(2.0, holder.kill).start()
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    holder.wait()
    lab.new_instance()
    ok(lab.run("mount-snapshots", "solr"))
    assert (mp / "kept").read_text() == "data"


def test_a_volume_still_mounted_elsewhere_is_neither_snapshotted_nor_detached(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    ok(lab.run("mount-snapshots", "solr"))
    holder = other_namespace(lab)
    try:
        first = lab.run("unmount-snapshots", "solr", "--yes")
        again = lab.run("unmount-snapshots", "solr", "--yes")  # unmounted here now, still mounted there
    finally:
        holder.kill()
        holder.wait()
    for result in (first, again):
        one_line_error(result, 1, "still mounted or in use elsewhere", f"process {holder.pid} (sleep)", "run again")
    (volume,) = our_volumes(lab)
    assert volume["State"] == "in-use"
    assert lab.call_counts()["CreateSnapshot"] == 0 and lab.call_counts()["DetachVolume"] == 0
    ok(lab.run("unmount-snapshots", "solr", "--yes"))  # once let go of there
    (volume,) = our_volumes(lab)
    assert volume["State"] == "available"
