"""The Debian package under a real systemd: boot, shutdown, new instance, reboot, upgrade, failures.

Each instance is a systemd-nspawn container booting the cached image (Debian 12, systemd as PID 1, the
built .deb installed, its units unchanged); only `Environment=` drop-ins point the agent at the lab. Every
cycle asserts from what the lab recorded (EC2 calls, snapshot bytes) and from the instance's journal.

Cycles 1 to 5 are one story on one lab (a first boot, its shutdown, a replacement instance restoring the
snapshot, a reboot of it, an upgrade and a periodic run); each needs the ones before it and is skipped,
saying so, when one of them failed. The failure cycles (6, 7) have a lab each and run twice: in
containers and in qemu VMs (`machines`; machine_vm.py). test_vm.py runs cycles 1 to 5 in VMs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from snaptastic_lab import Lab
from tests.boot.image import Image
from tests.boot.machine import Instance, Journal

MOUNT_POINT = "/mnt/solr"
MOUNT_UNIT = "mnt-solr.mount"
CONFIG = {"snapshotters": {"solr": {"volumes": [{"device": "/dev/sdf", "mount_point": MOUNT_POINT, "size": 1}]}}}
EVERYTHING = 'SNAPTASTIC_MOUNT="solr"\nSNAPTASTIC_SNAPSHOT="solr"\nSNAPTASTIC_PERIODIC="solr"\nSNAPTASTIC_CLEAN="solr"\n'
# The application: it starts only with its data there (the package's example drop-in says so) and
# leaves a line on the volume at every boot, which the snapshots must carry.
SOLR = """[Unit]
Description=Stand-in for an application whose data snaptastic restores

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mountpoint -q /mnt/solr && echo "boot $(tr -d - </proc/sys/kernel/random/boot_id) of $(cat /etc/machine-id)" >>/mnt/solr/boot-log'

[Install]
WantedBy=multi-user.target
"""
WRITES = ("CreateVolume", "AttachVolume", "DetachVolume", "DeleteVolume", "CreateSnapshot", "CreateSnapshots",
          "DeleteSnapshot", "CreateTags", "ModifyInstanceAttribute")
SNAPSHOT_LINE = re.compile(r"snapshot (snap-[0-9a-f]+) of /mnt/solr \((vol-[0-9a-f]+)\)")


def bake(instance: Instance, defaults: str = EVERYTHING, config: dict[str, Any] | None = CONFIG, solr: bool = True) -> None:
    """What the image build and cloud-init would put in place: the config, the defaults, the application
    with the drop-in the package documents; and the lab's endpoints for the package's units."""
    instance.point_units_at_lab()
    if config is not None:
        instance.write("/etc/snaptastic/snaptastic.json", json.dumps(config))
    instance.write("/etc/default/snaptastic", defaults)
    if solr:
        instance.write("/etc/systemd/system/solr.service", SOLR)
        example = instance.read("/usr/share/doc/snaptastic-boot/examples/solr-snaptastic.conf")
        instance.write("/etc/systemd/system/solr.service.d/snaptastic.conf", example)
        wants = instance.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "solr.service").symlink_to("/etc/systemd/system/solr.service")


def writes(lab: Lab) -> list[str]:
    return [action for _, action in lab.calls if action in WRITES]


def requests(lab: Lab, action: str) -> list[dict[str, str]]:
    return [params for _, name, params in lab.requests if name == action]


def no_traceback(journal: Journal) -> None:
    assert not [str(e) for e in journal if "Traceback" in e.message], journal.text()


def not_failed(journal: Journal, *units: str) -> None:
    failures = [str(e) for e in journal if e.get("UNIT") in units and "Failed with result" in e.message]
    assert not failures, failures


def started(journal: Journal, unit: str) -> int:
    """Index of PID 1's "Starting <unit>" message, or -1."""
    for i, e in enumerate(journal):
        if e.get("_PID") == "1" and e.get("UNIT") == unit and e.message.startswith("Starting "):
            return i
    return -1


def file_in_image(image: Path, path: str) -> str:
    """A file's content inside an ext4 image, read with debugfs (nothing is mounted)."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def restored_before_multi_user(journal: Journal, mounting: str) -> None:
    """The agent's `mounting` line, the end of snaptastic-mount.service and the application's start all come
    before multi-user.target is reached, in that order."""
    mounted = journal.find("snaptastic-mount", mounting)
    finished = journal.job("snaptastic-mount.service")
    solr = started(journal, "solr.service")
    target = journal.job("multi-user.target")
    assert 0 <= mounted < finished < solr < target, (mounted, finished, solr, target, journal.text())


# Cycles 1-5: one story on one lab.


class Story:
    """One lab and the instances of one story; `make(workdir, lab, name)` makes an instance (a container here,
    a VM in test_vm.py)."""

    def __init__(self, make: Callable[[Path, Lab, str], Any], deb: Path, workdir: Path, lab: Lab) -> None:
        self.make = make
        self.deb = deb
        self.workdir = workdir
        self.lab = lab
        self.instances: dict[str, Any] = {}
        self.passed: set[str] = set()
        self.facts: dict[str, Any] = {}

    def instance(self, name: str, **kw: Any) -> Any:
        self.instances[name] = self.make(self.workdir / name, self.lab, name, **kw)
        return self.instances[name]

    def replacement(self, name: str, userdata: Any = None, **kw: Any) -> Any:
        """The current instance is terminated and a replacement launched (with the same userdata unless
        given); returns the replacement's machine, not booted yet. The lab's call log starts empty."""
        self.lab.terminate_instance()
        if userdata is None:
            self.lab.new_instance()
        else:
            self.lab.new_instance(userdata=userdata)
        self.lab.reset_calls()
        return self.instance(name, **kw)

    def after(self, *cycles: str) -> None:
        missing = [c for c in cycles if c not in self.passed]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}, which did not pass")

    def close(self) -> None:
        for instance in self.instances.values():
            instance.close()


def poweroff_snapshots_while_mounted(lab: Lab, instance: Any, volume: str, network_units: tuple[str, ...] = ()) -> str:
    """Power the instance off: one CreateSnapshots of `volume`, taken before the shutdown unit stops, which is
    before the mount is unmounted and before network-online.target (and `network_units`) stop; the line the
    application wrote at boot is in the snapshot's bytes. Returns the snapshot id."""
    lab.reset_calls()
    assert instance.poweroff() == 0
    journal = instance.journal()
    lines = journal.lines("snaptastic-snapshot")
    found = [SNAPSHOT_LINE.search(line) for line in lines]
    snap_id, snapshotted = next((m.groups() for m in found if m), (None, None))
    assert snap_id and snapshotted == volume, lines
    taken = journal.find("snaptastic-snapshot", f"snapshot {snap_id}")
    stopped = journal.job("snaptastic-snapshot.service", "stop")
    unmounted = journal.job(MOUNT_UNIT, "stop")
    networks = [journal.job(unit, "stop") for unit in ("network-online.target", *network_units)]
    assert 0 <= taken < stopped < unmounted and all(stopped < n for n in networks), (
        taken, stopped, unmounted, networks, journal.text())
    assert writes(lab) == ["CreateSnapshots"]
    not_failed(journal, "snaptastic-snapshot.service", "snaptastic-mount.service")
    no_traceback(journal)
    content = file_in_image(lab.snapshot_file(snap_id), "/boot-log")
    assert content == f"boot {instance.boot_ids[-1]} of {instance.machine_id}\n", content
    return snap_id


def restored_the_snapshot(lab: Lab, instance: Any, journal: Journal, snapshot_id: str, boot_log_before: str) -> str:
    """A new instance made its volume from `snapshot_id` (not formatted) before multi-user.target, and its
    application added its line to what was there. Returns the new volume's id."""
    restored_before_multi_user(journal, "on /mnt/solr")
    assert [r.get("SnapshotId") for r in requests(lab, "CreateVolume")] == [snapshot_id]
    assert journal.find("snaptastic-mount", "formatting") < 0, "a restored volume must not be formatted"
    log = instance.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout
    assert log == boot_log_before + f"boot {instance.boot_ids[-1]} of {instance.machine_id}\n", log
    no_traceback(journal)
    return next(m.group(1) for m in (re.search(r"created (vol-\w+)", line) for line in journal.lines("snaptastic-mount")) if m)


def reboot_snapshots_and_creates_nothing(lab: Lab, instance: Any) -> Journal:
    """A reboot: its shutdown half takes one snapshot, its boot half creates and attaches nothing. Returns the
    journal of the new boot."""
    lab.reset_calls()
    assert instance.reboot() == "running", instance.exec("systemctl", "--failed").stdout
    before = instance.journal(-2)
    assert any(SNAPSHOT_LINE.search(line) for line in before.lines("snaptastic-snapshot")), before.lines("snaptastic-snapshot")
    not_failed(before, "snaptastic-snapshot.service")
    assert writes(lab) == ["CreateSnapshots"], lab.call_counts()
    return instance.journal()


def upgrade_takes_no_snapshot_the_periodic_run_does(lab: Lab, instance: Any, deb_inside: str) -> str:
    """`systemctl restart` of the shutdown unit and a `dpkg -i` of the package (its postinst restarts the unit,
    as an upgrade does) take no snapshot; the periodic service does; the power-off after all that still
    snapshots. Returns the power-off's snapshot id."""
    lab.reset_calls()
    instance.exec("systemctl", "restart", "snaptastic-snapshot.service", check=True)
    instance.exec("dpkg", "-i", deb_inside, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600, check=True)
    lines = instance.journal().lines("snaptastic-snapshot")
    skipped = "snaptastic-units: the system is not shutting down (state: running): no snapshot taken"
    assert lines.count(skipped) == 2, lines
    assert writes(lab) == [] and lab.call_counts().total() == 0, lab.call_counts()
    assert instance.exec("systemctl", "is-active", "snaptastic-snapshot.service").stdout.strip() == "active"
    instance.exec("systemctl", "start", "snaptastic-periodic.service", check=True, timeout=600)
    periodic = instance.journal().lines("snaptastic-periodic")
    assert any(SNAPSHOT_LINE.search(line) for line in periodic), periodic
    assert periodic[-2:] == ["snaptastic-units: snaptastic clean snapshots solr --force", "no snapshots to clean"], periodic
    assert writes(lab) == ["CreateSnapshots"]
    lab.reset_calls()
    assert instance.poweroff() == 0
    journal = instance.journal()
    taken = [m.group(1) for m in (SNAPSHOT_LINE.search(line) for line in journal.lines("snaptastic-snapshot")) if m]
    assert len(taken) == 1, journal.lines("snaptastic-snapshot")
    assert writes(lab) == ["CreateSnapshots"]
    not_failed(journal, "snaptastic-snapshot.service", "snaptastic-mount.service", "snaptastic-periodic.service")
    no_traceback(journal)
    return taken[0]


@pytest.fixture(scope="module")
def story(image: Image, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    workdir = tmp_path_factory.mktemp("story")
    lab = Lab(workdir / "lab").start()
    story = Story(lambda path, lab, name: Instance(image, path, lab, f"snaptastic-{name}-{os.getpid()}"), deb, workdir, lab)
    try:
        yield story
    finally:
        story.close()
        lab.stop()


def test_1_first_boot_creates_formats_and_mounts_before_multi_user(story: Story) -> None:
    lab = story.lab
    a = story.instance("a")
    bake(a)
    state = a.boot()
    assert state == "running", a.exec("systemctl", "--failed").stdout
    journal = a.journal()
    mount = journal.lines("snaptastic-mount")
    assert any(re.match(r"snaptastic: INFO created vol-\w+ for /mnt/solr \(empty\)", line) for line in mount), mount
    assert journal.find("snaptastic-mount", "formatting /lab/dev/") >= 0, mount
    restored_before_multi_user(journal, "on /mnt/solr")
    counts = lab.call_counts()
    assert (counts["CreateVolume"], counts["AttachVolume"]) == (1, 1), counts
    # The fstab entry, for the file system that is mounted.
    fstab = a.read("/etc/fstab")
    source = a.exec("findmnt", "-n", "-o", "SOURCE,UUID", MOUNT_POINT, check=True).stdout.split()
    assert f"# snaptastic-boot: managed entry for {MOUNT_POINT}\nUUID={source[1]} {MOUNT_POINT} ext4 defaults,nofail," in fstab, fstab
    # The application ran on the restored file system.
    assert a.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout == f"boot {a.boot_ids[-1]} of {a.machine_id}\n"
    # The runtime drop-in: the shutdown unit is ordered after the mount (After= only: it was mounted at run time).
    show = a.exec("systemctl", "show", "snaptastic-snapshot.service", "-p", "After", "-p", "Requires", "-p", "RequiresMountsFor").stdout
    assert "RequiresMountsFor=/mnt/solr" in show and MOUNT_UNIT in show.split("After=")[1].split("\n")[0], show
    assert MOUNT_UNIT not in show.split("Requires=")[1].split("\n")[0], show
    no_traceback(journal)
    story.facts["volume_a"] = re.search(r"created (vol-\w+)", "\n".join(mount)).group(1)  # type: ignore[union-attr]
    story.passed.add("cycle 1")


def test_2_poweroff_snapshots_while_mounted_and_before_the_network_stops(story: Story) -> None:
    story.after("cycle 1")
    a = story.instances["a"]
    story.facts["snapshot_a"] = poweroff_snapshots_while_mounted(story.lab, a, story.facts["volume_a"])
    story.facts["boot_log_a"] = f"boot {a.boot_ids[-1]} of {a.machine_id}\n"
    story.passed.add("cycle 2")


def test_3_new_instance_restores_the_snapshot_before_multi_user(story: Story) -> None:
    story.after("cycle 2")
    lab = story.lab
    b = story.replacement("b")
    bake(b)
    assert b.boot() == "running", b.exec("systemctl", "--failed").stdout
    journal = b.journal()
    story.facts["volume_b"] = restored_the_snapshot(lab, b, journal, story.facts["snapshot_a"], story.facts["boot_log_a"])
    story.passed.add("cycle 3")


def test_4_reboot_creates_nothing_mounts_again_and_snapshots_at_shutdown(story: Story) -> None:
    story.after("cycle 3")
    lab, b = story.lab, story.instances["b"]
    journal = reboot_snapshots_and_creates_nothing(lab, b)
    # The boot half: the same volume mounted again before multi-user.target.
    volume = story.facts["volume_b"]
    assert journal.find("snaptastic-mount", f"mount attached volume {volume}") >= 0, journal.lines("snaptastic-mount")
    restored_before_multi_user(journal, "on /mnt/solr")
    # In a container systemd's fstab generator skips device entries, so the agent mounted it, not fstab:
    # the mount unit does not come from /etc/fstab, and the generator, run by hand, says why.
    assert b.read("/etc/fstab").count(f" {MOUNT_POINT} ") == 1
    assert b.exec("systemctl", "show", "-P", "SourcePath", MOUNT_UNIT).stdout.strip() == ""
    generator = b.exec("/lib/systemd/system-generators/systemd-fstab-generator", "/tmp", "/tmp", "/tmp")
    assert "Running in a container, ignoring fstab device entry" in generator.stderr, generator.stderr
    log = b.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout.splitlines()
    assert len(log) == 3 and log[-1] == f"boot {b.boot_ids[-1]} of {b.machine_id}", log
    no_traceback(journal)
    story.passed.add("cycle 4")


def test_5_upgrade_restarts_take_no_snapshot_the_periodic_run_does(story: Story) -> None:
    story.after("cycle 4")
    b = story.instances["b"]
    shutil.copy(story.deb, b.root / "var/tmp/snaptastic-boot.deb")
    upgrade_takes_no_snapshot_the_periodic_run_does(story.lab, b, "/var/tmp/snaptastic-boot.deb")
    story.passed.add("cycle 5")


# Cycle 6: a failed restore.


def test_6_failed_restore_keeps_the_service_down_and_the_next_boot_reuses_the_volume(lab_factory: Any, machines: Any) -> None:
    lab = lab_factory()
    c = machines(lab, "c")
    bake(c)
    lab.faults.fail_actions = {"AttachVolume": (400, "AttachmentLimitExceeded", "No more volumes can be attached")}
    assert c.boot() == "degraded"
    journal = c.journal()
    assert journal.job("snaptastic-mount.service", "start", "failed") >= 0, journal.lines("snaptastic-mount")
    # The dependent service stays down, and the journal says why in one line of the wrapper.
    assert journal.job("solr.service", "start", "dependency") >= 0 and started(journal, "solr.service") < 0
    assert c.exec("systemctl", "is-active", "solr.service").stdout.strip() != "active"
    assert journal.lines("snaptastic-mount")[-2:] == [
        "snaptastic: error: EC2 AttachVolume failed: AttachmentLimitExceeded: No more volumes can be attached",
        "snaptastic-units: mount-snapshots solr failed with exit code 1; its volumes are not restored: services that "
        "require snaptastic-mount.service stay down, no snapshot is taken at shutdown",
    ], journal.lines("snaptastic-mount")
    created = requests(lab, "CreateVolume")
    assert len(created) == 1 and len(requests(lab, "AttachVolume")) == 1
    (volume,) = [v for v in lab.ec2.describe_volumes()["Volumes"] if any(t["Key"] == "mount_point" for t in v.get("Tags", []))]
    assert volume["State"] == "available"
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert (tags["instance_id"], tags["mount_point"]) == (lab.instance_id, MOUNT_POINT)
    # The shutdown takes no snapshot, says why, and neither fails nor prints a traceback.
    lab.faults.fail_actions = {}
    lab.reset_calls()
    assert c.poweroff() == 0
    journal = c.journal()
    assert journal.lines("snaptastic-snapshot") == [
        "snaptastic-units: no snapshot taken: snaptastic-mount.service failed at this boot, so the volumes are not "
        "restored (once they are mounted, 'systemctl restart snaptastic-mount.service' lets the next shutdown snapshot them)"
    ]
    assert lab.calls == [], "make-snapshots must not even look"
    not_failed(journal, "snaptastic-snapshot.service")
    no_traceback(journal)
    # The next boot of the same instance reuses the volume the failed run made (found by its instance_id and
    # mount_point tags): it attaches it, creates nothing, formats it (it was made empty and is blank).
    assert c.boot() == "running", c.exec("systemctl", "--failed").stdout
    journal = c.journal()
    assert journal.find("snaptastic-mount", f"attach existing volume {volume['VolumeId']}") >= 0, journal.lines("snaptastic-mount")
    assert "CreateVolume" not in lab.call_counts()
    assert [r["VolumeId"] for r in requests(lab, "AttachVolume")] == [volume["VolumeId"]]
    restored_before_multi_user(journal, "on /mnt/solr")
    lab.reset_calls()
    assert c.poweroff() == 0
    assert writes(lab) == ["CreateSnapshots"]
    no_traceback(c.journal())


# Cycle 7: nothing configured, and a configuration that cannot be read.


def test_7_nothing_named_every_unit_says_why_and_succeeds(lab_factory: Any, machines: Any) -> None:
    lab = lab_factory()
    d = machines(lab, "d")
    d.point_units_at_lab()  # the package's own /etc/default/snaptastic and config: nothing named
    assert d.boot() == "running", d.exec("systemctl", "--failed").stdout
    d.exec("systemctl", "start", "snaptastic-periodic.service", check=True)
    assert d.poweroff() == 0
    journal = d.journal()
    assert journal.lines("snaptastic-mount") == ["snaptastic-units: nothing to mount: SNAPTASTIC_MOUNT is empty in /etc/default/snaptastic"]
    assert journal.lines("snaptastic-periodic") == [
        "snaptastic-units: nothing to do: SNAPTASTIC_PERIODIC and SNAPTASTIC_CLEAN are empty in /etc/default/snaptastic"
    ]
    assert journal.lines("snaptastic-snapshot") == [
        "snaptastic-units: nothing to snapshot: SNAPTASTIC_SNAPSHOT is empty in /etc/default/snaptastic"
    ]
    not_failed(journal, "snaptastic-mount.service", "snaptastic-snapshot.service", "snaptastic-periodic.service")
    assert lab.calls == []


def test_7_a_config_that_cannot_be_read_fails_the_boot_unit_with_one_line(lab_factory: Any, machines: Any) -> None:
    """Only the shutdown snapshot is named, so only the wrapper reads the config at boot (for the ordering)."""
    lab = lab_factory()
    e = machines(lab, "e")
    bake(e, defaults='SNAPTASTIC_SNAPSHOT="solr"\n', config=None, solr=False)
    e.write("/etc/snaptastic/snaptastic.json", '{"snapshotters": {"solr": ')
    assert e.boot() == "degraded"
    assert e.poweroff() == 0
    journal = e.journal()
    assert journal.job("snaptastic-mount.service", "start", "failed") >= 0
    assert journal.lines("snaptastic-mount") == [
        "snaptastic-units: nothing to mount: SNAPTASTIC_MOUNT is empty in /etc/default/snaptastic",
        "snaptastic-units: cannot read /etc/snaptastic/snaptastic.json: not valid JSON (Expecting value at line 1 column 27); "
        "the shutdown snapshot of solr cannot be ordered before the unmount of their file systems",
    ]
    assert [line for line in journal.lines("snaptastic-snapshot") if "no snapshot taken" in line], journal.lines("snaptastic-snapshot")
    not_failed(journal, "snaptastic-snapshot.service")
    no_traceback(journal)
    assert lab.calls == []


def test_7_a_missing_config_fails_each_unit_with_one_line(lab_factory: Any, machines: Any) -> None:
    lab = lab_factory()
    f = machines(lab, "f")
    bake(f, config=None)
    (f.root / "etc/snaptastic/snaptastic.json").unlink()
    assert f.boot() == "degraded"
    periodic = f.exec("systemctl", "start", "snaptastic-periodic.service")
    assert periodic.returncode != 0
    assert f.poweroff() == 0
    journal = f.journal()
    why = "snaptastic: error: snapshotter 'solr' is not defined; known: none (from no settings file or config found)"
    for unit, command in (("snaptastic-mount", "mount-snapshots"), ("snaptastic-periodic", "make-snapshots")):
        lines = journal.lines(unit)
        assert lines[:3] == [f"snaptastic-units: snaptastic {command} solr", why, lines[2]], lines
        assert lines[2].startswith(f"snaptastic-units: {command} solr failed with exit code 2"), lines
        assert journal.job(f"{unit}.service", "start", "failed") >= 0
    assert journal.job("solr.service", "start", "dependency") >= 0
    no_traceback(journal)
    assert lab.calls == []


def test_7_an_unreadable_config_at_shutdown_fails_the_snapshot_unit_with_one_line(lab_factory: Any, machines: Any) -> None:
    lab = lab_factory()
    g = machines(lab, "g")
    bake(g, solr=False)
    assert g.boot() == "running", g.exec("systemctl", "--failed").stdout
    g.exec("rm", "/etc/snaptastic/snaptastic.json", check=True)
    g.exec("mkdir", "/etc/snaptastic/snaptastic.json", check=True)
    lab.reset_calls()
    assert g.poweroff() == 0
    journal = g.journal()
    assert journal.lines("snaptastic-snapshot") == [
        "snaptastic-units: snaptastic make-snapshots solr",
        "snaptastic: error: config: cannot read /etc/snaptastic/snaptastic.json: Is a directory",
        "snaptastic-units: make-snapshots solr failed with exit code 2",
    ]
    assert [str(e) for e in journal if e.get("UNIT") == "snaptastic-snapshot.service" and "Failed with result" in e.message]
    no_traceback(journal)
    assert writes(lab) == []
