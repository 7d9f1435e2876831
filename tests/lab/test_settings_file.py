"""The original Python settings file through the lab: hooks, custom filter tags, the walkthrough."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.lab.agent import ok

ROOT = Path(__file__).resolve().parents[2]


def settings_env(lab: Any, body: str) -> dict[str, str]:
    folder = Path(lab.workdir) / "settings"
    folder.mkdir(exist_ok=True)
    (folder / "snaptastic_settings.py").write_text(textwrap.dedent(body))
    lab.env.pop("SNAPTASTIC_CONFIG", None)
    lab.env["PYTHONPATH"] = f"{folder}:{ROOT}"
    return lab.env


def test_hooks_are_called_around_each_step_as_in_the_original(lab: Any) -> None:
    log = Path(lab.workdir) / "hooks.log"
    settings_env(lab, f"""
        from snaptastic_boot import Snapshotter, EBSVolume

        LOG = {str(log)!r}

        def note(text):
            with open(LOG, "a") as f:
                f.write(text + "\\n")

        class SolrSnapshotter(Snapshotter):
            name = 'solr'

            def get_volumes(self):
                return [EBSVolume('/dev/sdf', {str(lab.mount_root / "solr")!r}, size=1)]

            def pre_mounts(self, volumes): note("pre_mounts %d" % len(volumes))
            def pre_mount(self, vol): note("pre_mount " + vol.device)
            def post_mount(self, vol): note("post_mount " + vol.device)
            def post_mounts(self, volumes): note("post_mounts")
            def pre_snapshots(self, volumes): note("pre_snapshots")
            def pre_snapshot(self, vol): note("pre_snapshot " + vol.device)
            def post_snapshot(self, vol): note("post_snapshot " + vol.device)
            def post_snapshots(self, volumes): note("post_snapshots")
            def pre_unmounts(self, volumes): note("pre_unmounts")
            def pre_unmount(self, vol): note("pre_unmount")
            def post_unmount(self, vol): note("post_unmount")
            def post_unmounts(self, volumes): note("post_unmounts")
    """)
    ok(lab.run("mount-snapshots", "solr"))
    ok(lab.run("make-snapshots", "solr"))
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    assert log.read_text().splitlines() == [
        "pre_mounts 1", "pre_mount /dev/sdf", "post_mount /dev/sdf", "post_mounts",
        "pre_snapshots", "pre_snapshot /dev/sdf", "post_snapshot /dev/sdf", "post_snapshots",
        "pre_unmounts", "pre_unmount", "post_unmount", "post_unmounts",
    ]


def test_custom_filter_tags_find_their_own_snapshots(lab: Any) -> None:
    lab.set_userdata('{"group": "g1"}')
    settings_env(lab, f"""
        from snaptastic_boot import Snapshotter, EBSVolume

        class CustomFilterSnapshotter(Snapshotter):
            name = 'filter_example'

            def get_volumes(self):
                return [EBSVolume('/dev/sdf', {str(lab.mount_root / "g")!r}, size=1)]

            def get_filter_tags(self):
                return {{'group': self.userdata['group']}}
    """)
    ok(lab.run("mount-snapshots", "filter_example"))
    (lab.mount_root / "g" / "f").write_text("group data")
    ok(lab.run("make-snapshots", "filter_example"))
    ok(lab.run("unmount-snapshots", "filter_example", "--yes"))
    lab.new_instance()
    ok(lab.run("mount-snapshots", "filter_example"))
    assert (lab.mount_root / "g" / "f").read_text() == "group data"
    snaps = lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert {t["Key"]: t["Value"] for t in snaps[0]["Tags"]}["group"] == "g1"


def test_walkthrough_tells_the_original_story(lab_factory: Any) -> None:
    lab_factory()  # skips without root, like every lab test
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "walkthrough.py"), "--device-style", "xen"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    steps = ["$ sudo snaptastic test", "$ sudo snaptastic list-volumes solr", "$ sudo snaptastic mount-snapshots solr",
             "$ sudo snaptastic make-snapshots solr", "$ sudo snaptastic unmount-snapshots solr --yes",
             "/mnt/solr is gone", "$ sudo snaptastic mount-snapshots solr", "$ cat /mnt/solr/helloworld\nhelloworld",
             "helloworld is back"]
    at = 0
    for step in steps:  # in this order
        at = out.index(step, at) + len(step)
    assert not Path("/mnt/solr").is_mount()
