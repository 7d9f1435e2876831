"""The Debian package in a real virtual machine: a kernel, udev, NVMe hot-plug, systemd's fstab mounts, cloud-init.

The story of test_cycles.py's cycles 1 to 4 (first boot, poweroff, a replacement instance restoring the
snapshot, a reboot), each VM booting the cached VM disk with the built .deb and its units unchanged; only
`Environment=` drop-ins point the agent at the lab's forwarded EC2 endpoint and accept qemu's NVMe model
(see machine_vm.py). The instances are launched with the `cloudinit/ami` userdata: cloud-init's own Ec2
datasource reads it from the metadata service and writes the configuration, and the units do the rest, as
on an AMI with the package baked in. What a container cannot show is asserted here: the volume is a
hot-plugged PCIe device the kernel names and udev links by its serial, and at a reboot systemd mounts the
fstab entry the agent wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from snaptastic_lab import Lab
from tests.boot.image import VmImage
from tests.boot.machine_vm import VmInstance
from tests.boot.test_cycles import (
    MOUNT_POINT,
    MOUNT_UNIT,
    SOLR,
    Story,
    no_traceback,
    poweroff_snapshots_while_mounted,
    reboot_snapshots_and_creates_nothing,
    requests,
    restored_before_multi_user,
    restored_the_snapshot,
    started,
    upgrade_takes_no_snapshot_the_periodic_run_does,
)

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
AMI_USERDATA = ROOT / "cloudinit/ami/userdata.mime"
WHEEL_ADDRESS = "169.254.0.101"


def bake(instance: VmInstance) -> None:
    """What the AMI build puts in place: the application with the drop-in the package documents; and the
    lab's endpoints for the package's units. The configuration comes from the userdata, through cloud-init."""
    instance.point_units_at_lab()
    instance.write("/etc/systemd/system/solr.service", SOLR)
    example = instance.read("/usr/share/doc/snaptastic-boot/examples/solr-snaptastic.conf")
    instance.write("/etc/systemd/system/solr.service.d/snaptastic.conf", example)
    wants = instance.root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "solr.service").symlink_to("/etc/systemd/system/solr.service")


def cloud_init_wrote_the_config(instance: VmInstance, journal: Any, lab: Lab) -> None:
    """cloud-init found EC2 (its Ec2 datasource, from the metadata service), wrote the files of the userdata,
    and did so before snaptastic-mount.service started."""
    data = json.loads(instance.read("/run/cloud-init/instance-data.json"))["v1"]
    assert (data["cloud_name"], data["instance_id"]) == ("aws", lab.instance_id), data
    assert '"solr"' in instance.read("/etc/snaptastic/snaptastic.json")
    assert 'SNAPTASTIC_MOUNT="solr"' in instance.read("/etc/default/snaptastic")
    assert 0 <= journal.job("cloud-init.service") < started(journal, "snaptastic-mount.service"), journal.text()


@pytest.fixture(scope="module")
def story(vm_image: VmImage, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    workdir = tmp_path_factory.mktemp("vm-story")
    lab = Lab(workdir / "lab", userdata=AMI_USERDATA.read_bytes()).start()

    def make(path: Path, lab: Lab, name: str, **kw: Any) -> VmInstance:
        return VmInstance(vm_image, path, lab, f"snaptastic-vm-{name}-{os.getpid()}", **kw)

    story = Story(make, deb, workdir, lab)
    try:
        yield story
    finally:
        story.close()
        lab.stop()


def nvme_device(instance: VmInstance, volume_id: str) -> str:
    """The kernel's name for the hot-plugged volume, found the way udev links it: by its NVMe serial."""
    link = f"/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_{volume_id.replace('-', '')}"
    return instance.exec("readlink", "-f", link, check=True).stdout.strip()


def test_vm_1_first_boot_hot_plugs_formats_and_mounts_before_multi_user(story: Story) -> None:
    lab = story.lab
    a = story.instance("a")
    bake(a)
    state = a.boot()
    journal = a.journal()
    assert state == "running", (a.exec("systemctl", "--failed").stdout, journal.text()[-6000:])
    mount = journal.lines("snaptastic-mount")
    created = [m.group(1) for m in (re.match(r"snaptastic: INFO created (vol-\w+) for /mnt/solr \(empty\)", line) for line in mount) if m]
    assert len(created) == 1, mount
    volume = created[0]
    # The device is the one the kernel made for the hot-plugged controller, linked by udev by its serial.
    device = nvme_device(a, volume)
    assert re.fullmatch(r"/dev/nvme\dn1", device), device
    assert a.read(f"/sys/block/{device.removeprefix('/dev/')}/device/serial").strip() == volume.replace("-", "")
    assert journal.find("snaptastic-mount", f"formatting {device}") >= 0, mount
    cloud_init_wrote_the_config(a, journal, lab)
    restored_before_multi_user(journal, "on /mnt/solr")
    counts = lab.call_counts()
    assert (counts["CreateVolume"], counts["AttachVolume"]) == (1, 1), counts
    source, fs_uuid = a.exec("findmnt", "-n", "-o", "SOURCE,UUID", MOUNT_POINT, check=True).stdout.split()
    assert source == device
    fstab = a.read("/etc/fstab")
    assert fstab.startswith("# /etc/fstab: static file system information.\n/dev/vda / ext4 defaults,discard 0 1\n"), fstab
    assert f"# snaptastic-boot: managed entry for {MOUNT_POINT}\nUUID={fs_uuid} {MOUNT_POINT} ext4 defaults,nofail," in fstab, fstab
    assert a.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout == f"boot {a.boot_ids[-1]} of {a.machine_id}\n"
    no_traceback(journal)
    story.facts["volume_a"] = volume
    story.passed.add("cycle 1")


def test_vm_2_poweroff_snapshots_while_mounted_and_before_the_network_stops(story: Story) -> None:
    story.after("cycle 1")
    a = story.instances["a"]
    # The line the application wrote at boot reaches the snapshot through the guest's kernel and qemu.
    story.facts["snapshot_a"] = poweroff_snapshots_while_mounted(story.lab, a, story.facts["volume_a"],
                                                                 network_units=("systemd-networkd.service",))
    story.facts["boot_log_a"] = f"boot {a.boot_ids[-1]} of {a.machine_id}\n"
    story.passed.add("cycle 2")


def test_vm_3_new_instance_restores_the_snapshot_before_multi_user(story: Story) -> None:
    story.after("cycle 2")
    lab = story.lab
    b = story.replacement("b")
    bake(b)
    shutil.copy(story.deb, b.root / "var/tmp/snaptastic-boot.deb")  # for the upgrade of cycle 5
    assert b.boot() == "running", b.exec("systemctl", "--failed").stdout
    journal = b.journal()
    cloud_init_wrote_the_config(b, journal, lab)
    story.facts["volume_b"] = restored_the_snapshot(lab, b, journal, story.facts["snapshot_a"], story.facts["boot_log_a"])
    story.passed.add("cycle 3")


def test_vm_4_reboot_mounts_by_fstab_creates_nothing_and_snapshots_at_shutdown(story: Story) -> None:
    story.after("cycle 3")
    lab, b = story.lab, story.instances["b"]
    journal = reboot_snapshots_and_creates_nothing(lab, b)
    # The volume stayed attached through the reset; systemd mounted it from the fstab entry the agent wrote,
    # and the agent, racing it, found it mounted: nothing created, attached or formatted.
    volume = story.facts["volume_b"]
    assert b.exec("systemctl", "show", "-P", "SourcePath", MOUNT_UNIT).stdout.strip() == "/etc/fstab"
    assert journal.job(MOUNT_UNIT) >= 0, journal.text()
    assert "CreateVolume" not in lab.call_counts() and "AttachVolume" not in lab.call_counts(), lab.call_counts()
    assert journal.find("snaptastic-mount", "formatting") < 0
    assert journal.find("snaptastic-mount", volume) >= 0, journal.lines("snaptastic-mount")
    restored_before_multi_user(journal, "/mnt/solr")
    assert nvme_device(b, volume) == b.exec("findmnt", "-n", "-o", "SOURCE", MOUNT_POINT, check=True).stdout.strip()
    log = b.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout.splitlines()
    assert len(log) == 3 and log[-1] == f"boot {b.boot_ids[-1]} of {b.machine_id}", log
    # With the fstab mount unit known when systemd loads the units, RequiresMountsFor= (the documented
    # drop-in's, and the shutdown unit's runtime one) adds Requires= as well as After= on it: the application
    # waits for the mount and starts after it.
    for unit in ("solr.service", "snaptastic-snapshot.service"):
        show = dict(line.split("=", 1) for line in b.exec(
            "systemctl", "show", unit, "-p", "Requires", "-p", "After", check=True).stdout.splitlines() if "=" in line)
        assert MOUNT_UNIT in show["Requires"].split() and MOUNT_UNIT in show["After"].split(), (unit, show)
    assert 0 <= journal.job(MOUNT_UNIT) < started(journal, "solr.service"), journal.text()
    no_traceback(journal)
    story.passed.add("cycle 4")


def test_vm_5_upgrade_restarts_take_no_snapshot_the_periodic_run_does(story: Story) -> None:
    story.after("cycle 4")
    story.facts["snapshot_b"] = upgrade_takes_no_snapshot_the_periodic_run_does(story.lab, story.instances["b"],
                                                                               "/var/tmp/snaptastic-boot.deb")
    story.passed.add("cycle 5")


# The cloudinit/multipart example: a plain image with cloud-init, the agent installed from a wheel by runcmd.


@pytest.fixture(scope="module")
def wheel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, list[str]]]:
    """The wheel built from this tree, served on 127.0.0.1 as the example's URL would serve it: (file name,
    port, the paths fetched)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("snaptastic_boot-*-py3-none-any.whl")
    fetched: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(out), **kw)

        def log_message(self, format: str, *args: Any) -> None:
            fetched.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield wheel.name, server.server_address[1], fetched
    finally:
        server.shutdown()
        server.server_close()


def multipart_userdata(wheel_url: str) -> bytes:
    """The example's userdata with the wheel's URL put in. The guest reaches no package index, so its
    `packages:` (python3-venv, python3-boto3, python3-jsonschema) are in the image already and left out here:
    cloud-init would otherwise fail the module on `apt-get update`."""
    spec = importlib.util.spec_from_file_location("make_userdata", ROOT / "cloudinit/make_userdata.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = (ROOT / "cloudinit/multipart/cloud-config.yaml").read_text()
    example_url = re.search(r'"(https://\S+\.whl)"', config)
    assert example_url, "the example installs from a wheel's URL"
    config = config.replace(example_url.group(1), wheel_url)
    config, removed = re.subn(r"\npackages:\n(  - \S+\n)+", "\n", config)
    assert removed == 1
    identity = (ROOT / "cloudinit/multipart/identity.json").read_text()
    return tool.build([("cloud-config.yaml", "text/cloud-config", config), ("identity.json", "application/json", identity)])


def test_vm_6_the_multipart_example_restores_the_newest_snapshot_from_runcmd(story: Story, wheel_server: Any) -> None:
    story.after("cycle 5")
    wheel, port, fetched = wheel_server
    lab = story.lab
    c = story.replacement("c", userdata=multipart_userdata(f"http://{WHEEL_ADDRESS}/{wheel}"),
                          forwards={f"{WHEEL_ADDRESS}:80": port})
    # Only runcmd runs the agent here (the package's units are told nothing): point it at the lab's EC2.
    c.point_units_at_lab(units=("cloud-final.service",))
    assert c.boot() == "running", c.exec("systemctl", "--failed").stdout
    journal = c.journal()
    assert fetched == [f"/{wheel}"], fetched
    assert c.exec("readlink", "/usr/local/bin/snaptastic").stdout.strip() == "/opt/snaptastic-boot/bin/snaptastic"
    final = [e.message for e in journal if e.get("_SYSTEMD_UNIT") == "cloud-final.service"]
    assert any(re.search(r"snaptastic: INFO .*on /mnt/solr", line) for line in final), final
    assert [r.get("SnapshotId") for r in requests(lab, "CreateVolume")] == [story.facts["snapshot_b"]]
    # The bytes of b's last snapshot: a's boot, and b's two boots.
    log = c.exec("cat", f"{MOUNT_POINT}/boot-log", check=True).stdout.splitlines()
    assert len(log) == 3 and log[0] == story.facts["boot_log_a"].strip(), log
    fstab = c.read("/etc/fstab")
    assert f"# snaptastic-boot: managed entry for {MOUNT_POINT}\n" in fstab, fstab
    assert journal.lines("snaptastic-mount") == ["snaptastic-units: nothing to mount: SNAPTASTIC_MOUNT is empty in /etc/default/snaptastic"]
    no_traceback(journal)
