"""Every command and every exit code through `cli.main`, against in-memory EC2, metadata and devices."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snaptastic_boot import cli
from snaptastic_boot.apply import freeze, waits
from snaptastic_boot.apply.restore import Restorer
from snaptastic_boot.commands.context import Adapters
from snaptastic_boot.config import settings as settings_mod
from snaptastic_boot.errors import CredentialsMissing, MetadataUnavailable, Stopped
from snaptastic_boot.model import SnapshotterSpec, VolumeSpec
from snaptastic_boot.plan import restore
from snaptastic_boot.system import handled, lock
from snaptastic_boot.system.stopping import GracefulStop
from tests.unit.fakes import INSTANCE_ID, ZONE, FakeDevices, FakeEc2, FakeImds

TAGS = {"role": "solr", "cluster": "search", "environment": "test"}
MOUNTS = ("/mnt/solr", "/mnt/logs")


class Agent:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.ec2 = FakeEc2()
        self.imds = FakeImds()
        self.devices = FakeDevices(self.ec2)
        self.fstab = tmp_path / "fstab"
        self.fstab.write_text("# static file system information\n/dev/xvda1 / ext4 defaults 0 1\n")
        self.run_dir = tmp_path / "run"
        self.config = tmp_path / "snaptastic.json"
        self.configure()
        self.capsys = capsys
        self.ec2_error: Exception | None = None

    def configure(self, **entry: Any) -> None:
        vols = [{"device": d, "mount_point": mp, "size": 1} for d, mp in zip(("/dev/sdf", "/dev/sdg"), MOUNTS)]
        self.config.write_text(json.dumps({"snapshotters": {"solr": {"volumes": vols, **entry}}}))

    def adapters(self) -> Adapters:
        def ec2(region: str, tunables: Any) -> FakeEc2:
            if self.ec2_error is not None:
                raise self.ec2_error
            return self.ec2

        return Adapters(imds=lambda tunables: self.imds, ec2=ec2, devices=lambda paths: self.devices)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def agent(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Agent:
    a = Agent(tmp_path, capsys)
    monkeypatch.setattr(Adapters, "default", staticmethod(a.adapters))
    monkeypatch.setattr(freeze, "_start_guard", lambda *_: None)  # no process in unit tests
    # Whatever this machine has in /etc or on sys.path is not the test's settings file.
    monkeypatch.setattr(settings_mod, "SETTINGS_FILES", (tmp_path / "snaptastic_settings.py",))
    monkeypatch.delitem(sys.modules, "snaptastic_settings", raising=False)
    monkeypatch.setattr(waits, "SLEEPS", (0.0,))
    for key, value in {"SNAPTASTIC_FSTAB": a.fstab, "SNAPTASTIC_RUN_DIR": a.run_dir, "SNAPTASTIC_CONFIG": a.config,
                       "SNAPTASTIC_WAIT_TIMEOUT": "5"}.items():
        monkeypatch.setenv(key, str(value))
    return a


def test_first_boot_creates_formats_mounts_and_writes_fstab_and_a_rerun_changes_nothing(agent: Agent) -> None:
    code, out, _ = agent("mount-snapshots", "solr")
    assert code == 0, out
    assert agent.ec2.calls["CreateVolume"] == 2 and agent.ec2.calls["AttachVolume"] == 2
    assert sorted(e for e in agent.devices.events if e.startswith("mkfs")) == sorted(f"mkfs {v}" for v in agent.ec2.data_volumes())
    assert set(agent.devices.table) == {"/", *MOUNTS}
    text = agent.fstab.read_text()
    assert text.startswith("# static file system information\n/dev/xvda1 / ext4 defaults 0 1\n")
    assert text.count("# snaptastic-boot: managed entry for") == 2 and "UUID=" in text
    assert agent.ec2.delete_on_termination() == {"/dev/sdf": True, "/dev/sdg": True}
    before = agent.ec2.mutating_calls
    assert agent("mount-snapshots", "solr")[0] == 0
    assert agent.ec2.mutating_calls == before and agent.fstab.read_text() == text


def test_a_restore_from_snapshots_never_formats_and_brings_the_files_back(agent: Agent) -> None:
    for mp in MOUNTS:
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, files={"data": mp})
    assert agent("mount-snapshots", "solr")[0] == 0
    assert not [e for e in agent.devices.events if e.startswith("mkfs")]
    assert {mp: agent.devices.files(mp)["data"] for mp in MOUNTS} == {mp: mp for mp in MOUNTS}


def test_a_snapshot_without_a_filesystem_is_refused_not_formatted(agent: Agent) -> None:
    for mp in MOUNTS:
        sid = agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"})
        agent.ec2.disks[sid].fstype = None
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 1 and "refusing to format a volume made from a snapshot" in err
    assert not [e for e in agent.devices.events if e.startswith(("mkfs", "mount"))]


def test_a_pending_newest_set_that_fails_falls_back_to_the_previous_set(agent: Agent) -> None:
    for mp in MOUNTS:
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "old"}, minutes_ago=120, files={"v": "old"})
        sid = agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "new"}, minutes_ago=1, state="pending", files={"v": "new"})
        agent.ec2.scripted[sid] = ["pending", "error"]
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 0, err
    assert "restoring the previous complete snapshot set instead" in err
    assert {agent.devices.files(mp)["v"] for mp in MOUNTS} == {"old"}


def test_make_snapshots_freezes_every_target_takes_one_call_and_thaws(agent: Agent) -> None:
    agent("mount-snapshots", "solr")
    code, out, _ = agent("make-snapshots", "solr", "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report["snapshots"]) == set(MOUNTS) and agent.ec2.calls["CreateSnapshots"] == 1
    assert {f"freeze {mp}" for mp in MOUNTS} | {f"thaw {mp}" for mp in MOUNTS} <= set(agent.devices.events)
    assert not agent.devices.frozen
    sets = {dict((t["Key"], t["Value"]) for t in agent.ec2.snapshots[s]["Tags"])["snapshot_set"]
            for s in report["snapshots"].values()}
    assert len(sets) == 1


def test_a_failing_snapshot_call_still_thaws_everything(agent: Agent) -> None:
    agent("mount-snapshots", "solr")
    agent.ec2.fail("CreateSnapshots", "InternalError")
    code, _, err = agent("make-snapshots", "solr")
    assert code == 1 and "CreateSnapshots failed: InternalError" in err
    assert not agent.devices.frozen and sum(e.startswith("thaw") for e in agent.devices.events) == 2


def test_a_refused_create_snapshots_falls_back_to_one_call_per_volume(agent: Agent) -> None:
    agent("mount-snapshots", "solr")
    agent.ec2.fail("CreateSnapshots", "UnauthorizedOperation")
    assert agent("make-snapshots", "solr")[0] == 0
    assert agent.ec2.calls["CreateSnapshot"] == 2 and not agent.devices.frozen


def test_unmount_snapshots_then_detaches_and_marks_the_volumes(agent: Agent) -> None:
    agent("mount-snapshots", "solr")
    code, out, _ = agent("unmount-snapshots", "solr", "--yes")
    assert code == 0 and out.count("snapshot snap-") == 2
    assert set(agent.devices.table) == {"/"} and "managed entry" not in agent.fstab.read_text()
    assert all(not v["Attachments"] and "detached" in {t["Key"] for t in v["Tags"]} for v in agent.ec2.data_volumes().values())
    snapped = {s["VolumeId"] for s in agent.ec2.snapshots.values()}
    assert snapped == set(agent.ec2.data_volumes())


def test_clean_deletes_only_expired_beyond_keep_and_never_an_ami_snapshot(agent: Agent) -> None:
    expired = {**TAGS, "expires": "2020-01-01T00:00:00Z"}
    ids = [agent.ec2.add_snapshot("/mnt/solr", {**expired, "snapshot_set": f"s{i}"}, minutes_ago=100 - i) for i in range(5)]
    for i in range(len(ids)):
        agent.ec2.add_snapshot("/mnt/logs", {**expired, "snapshot_set": f"s{i}"}, minutes_ago=100 - i)
    agent.ec2.images[ids[0]] = "ami-1"
    code = agent("clean", "snapshots", "solr", "--keep", "2", "--force")[0]
    assert code == 0
    left = set(agent.ec2.snapshots)
    assert ids[0] in left and set(ids[3:]) <= left and not set(ids[1:3]) & left


def test_check_backups_exit_codes(agent: Agent) -> None:
    agent("mount-snapshots", "solr")
    assert agent("check-backups", "--age", "1d")[0] == 1
    agent("make-snapshots", "solr")
    code, out, _ = agent("check-backups", "--age", "1d")
    assert code == 0 and out.count("OK ") == 2


@pytest.mark.parametrize(
    ("setup", "argv", "code", "words"),
    [
        (None, ["mount-snapshots", "solr", "--userdata", '{"role": 1}'], 2, "userdata.cluster"),
        ("bad-config", ["mount-snapshots", "solr"], 2, "did you mean 'size'"),
        (None, ["clean", "snapshots", "--keep", "0"], 2, "--keep"),
        (None, ["mount-snapshots", "nosuch"], 2, "snapshotter 'nosuch' is not defined"),
        ("no-imds", ["mount-snapshots", "solr"], 3, "did not answer"),
        ("no-credentials", ["mount-snapshots", "solr"], 3, "no AWS credentials"),
        ("ec2-fails", ["mount-snapshots", "solr"], 1, "CreateVolume failed: InsufficientVolumeCapacity"),
        ("bug", ["mount-snapshots", "solr"], 1, "this is a bug"),
    ],
)
def test_every_exit_code(agent: Agent, monkeypatch: pytest.MonkeyPatch, setup: str | None, argv: list[str],
                         code: int, words: str) -> None:
    if setup == "bad-config":
        agent.config.write_text(json.dumps({"snapshotters": {"solr": {"volumes": [
            {"device": "/dev/sdf", "mount_point": "/mnt/solr", "sise": 1}]}}}))
    elif setup == "no-imds":
        agent.imds.error = MetadataUnavailable("metadata service at http://fake-imds/ did not answer")
    elif setup == "no-credentials":
        agent.ec2_error = CredentialsMissing("no AWS credentials found")
    elif setup == "ec2-fails":
        agent.ec2.fail("CreateVolume", "InsufficientVolumeCapacity")
    elif setup == "bug":
        monkeypatch.setattr(agent.devices, "mount", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    got, _, err = agent(*argv)
    assert got == code, err
    lines = [line for line in err.splitlines() if line.startswith("snaptastic:") and "error" in line]
    assert lines and words in lines[-1], err
    if code == 2:
        assert agent.ec2.mutating_calls == 0


def test_exit_4_when_another_run_holds_the_lock(agent: Agent) -> None:
    with lock.exclusive(agent.run_dir / "snaptastic.lock"):
        code, _, err = agent("mount-snapshots", "solr")
    assert code == 4 and "another snaptastic run holds" in err
    assert agent.ec2.mutating_calls == 0


def test_a_stop_between_steps_leaves_nothing_half_done() -> None:
    ec2 = FakeEc2()
    spec = SnapshotterSpec("solr", (VolumeSpec("/dev/sdf", "/mnt/solr", 1),), TAGS)
    plan = restore.plan_restore(spec, INSTANCE_ID, ZONE, [], [], [])
    stop = GracefulStop()
    stop.signum = signal.SIGTERM
    with pytest.raises(Stopped, match="stopped by SIGTERM after waiting for snapshots"):
        Restorer(ec2, FakeDevices(ec2), Path("/nonexistent/fstab"), stop=stop).apply(plan)
    assert ec2.mutating_calls == 0


def test_a_refused_grow_is_tried_again_by_every_later_run_until_it_works(agent: Agent) -> None:
    agent.configure()
    for mp in MOUNTS:
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, size=1)
    agent.config.write_text(agent.config.read_text().replace('"size": 1', '"size": 3'))
    agent.devices.refuse_grow.add("/mnt/solr")
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 0 and err.count("could not grow the filesystem") == 1
    assert "grow /mnt/logs" in agent.devices.events
    code, _, err = agent("mount-snapshots", "solr")  # a reboot: mounted, still small
    assert code == 0 and err.count("could not grow the filesystem") == 1
    agent.devices.refuse_grow.clear()
    assert agent("mount-snapshots", "solr")[0] == 0
    assert "grow /mnt/solr" in agent.devices.events
    agent.devices.events.clear()
    assert agent("mount-snapshots", "solr")[0] == 0 and not agent.devices.events  # filled: nothing to do


def left_behind(agent: Agent, owner: str, zone: str = ZONE, files: str = "written until the end") -> dict[str, str]:
    """The volumes a replaced instance left: this snapshotter's tags, made for `owner`, available."""
    made = {}
    for mp in MOUNTS:
        vol = agent.ec2.create_volume({"AvailabilityZone": zone, "Size": 1, "TagSpecifications": [{
            "ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in
                                              {**TAGS, "mount_point": mp, "instance_id": owner}.items()]}]})
        agent.ec2.disks[vol["VolumeId"]].fstype = "ext4"
        agent.ec2.disks[vol["VolumeId"]].files["v"] = files
        made[mp] = vol["VolumeId"]
    agent.ec2.calls.clear()
    return made


def test_reuse_reattaches_a_replaced_instances_volumes_whole_and_makes_them_ours(agent: Agent) -> None:
    agent.configure(reuse_volumes=True)
    agent.config.write_text(agent.config.read_text().replace('"size": 1', '"size": 1, "delete_on_termination": false'))
    for mp in MOUNTS:
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, files={"v": "older snapshot"})
    left = left_behind(agent, "i-0gone")
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 0, err
    assert agent.ec2.calls["CreateVolume"] == 0 and {agent.devices.files(mp)["v"] for mp in MOUNTS} == {"written until the end"}
    for vid in left.values():
        assert {t["Key"]: t["Value"] for t in agent.ec2.volumes[vid]["Tags"]}["instance_id"] == INSTANCE_ID
    assert not [e for e in agent.devices.events if e.startswith("mkfs")]
    assert agent.ec2.delete_on_termination() == {"/dev/sdf": False, "/dev/sdg": False}


def test_reuse_with_delete_on_termination_is_a_config_error(agent: Agent) -> None:
    agent.configure(reuse_volumes=True)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 2 and "delete_on_termination: must be false with reuse_volumes" in err


def test_two_agents_racing_for_one_group_exactly_one_takes_it(tmp_path: Path) -> None:
    import threading

    ec2 = FakeEc2()
    spec = SnapshotterSpec("solr", tuple(VolumeSpec(d, mp, 1, delete_on_termination=False)
                                         for d, mp in zip(("/dev/sdf", "/dev/sdg"), MOUNTS)), TAGS, reuse_volumes=True)
    agent_like = type("A", (), {"ec2": ec2})()
    left = left_behind(agent_like, "i-0gone")  # type: ignore[arg-type]
    for mp in MOUNTS:
        ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"})
    leftovers = ec2.describe_volumes()
    for instance_id in ("i-0one", "i-0two"):
        ec2.add_instance(instance_id)
    results: dict[str, list[str | None]] = {}
    start = threading.Barrier(2)

    def boot(instance_id: str) -> None:
        plan = restore.plan_restore(spec, instance_id, ZONE, list(ec2.snapshots.values()), [], [], leftovers=leftovers)
        start.wait()
        report = Restorer(ec2, FakeDevices(ec2, instance_id=instance_id), tmp_path / f"fstab-{instance_id}").apply(plan)
        results[instance_id] = [v.snapshot_id for v in report.volumes]

    threads = [threading.Thread(target=boot, args=(i,)) for i in ("i-0one", "i-0two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    reattached = [i for i, snaps in results.items() if snaps == [None, None]]
    restored = [i for i, snaps in results.items() if all(snaps)]
    assert len(reattached) == 1 and len(restored) == 1, results
    owners = {a["InstanceId"] for vid in left.values() for a in ec2.volumes[vid]["Attachments"]}
    assert owners == set(reattached)


def test_a_group_taken_in_part_is_given_back_whole(tmp_path: Path) -> None:
    ec2 = FakeEc2()
    spec = SnapshotterSpec("solr", tuple(VolumeSpec(d, mp, 1, delete_on_termination=False)
                                         for d, mp in zip(("/dev/sdf", "/dev/sdg"), MOUNTS)), TAGS, reuse_volumes=True)
    left = left_behind(type("A", (), {"ec2": ec2})(), "i-0gone")  # type: ignore[arg-type]
    plan = restore.plan_restore(spec, INSTANCE_ID, ZONE, [], [], [], leftovers=ec2.describe_volumes())
    ec2.add_instance("i-0other")
    ec2.attach_volume(left["/mnt/solr"], "i-0other", "/dev/sdf")  # another agent won the second one meanwhile
    report = Restorer(ec2, FakeDevices(ec2), tmp_path / "fstab").apply(plan)
    assert ec2.volumes[left["/mnt/logs"]]["State"] == "available"  # given back
    assert ec2.calls["CreateVolume"] == 2 and all(v.action == "create" for v in report.volumes)


def test_no_command_prints_help_and_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "usage: snaptastic" in err and "this is a bug" not in err


def test_an_xfs_mount_that_fails_is_tried_again_with_nouuid(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    from snaptastic_boot.errors import CommandError

    for mp in MOUNTS:
        sid = agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"})
        agent.ec2.disks[sid].fstype = "xfs"
    real = agent.devices.mount

    def twin_out_of_sight(path: Path, mount_point: str, fstype: str, options: str) -> None:
        if "nouuid" not in options:
            raise CommandError(["mount"], 32, "", "mount: wrong fs type")  # what xfs says to a duplicate UUID
        real(path, mount_point, fstype, options)

    monkeypatch.setattr(agent.devices, "mount", twin_out_of_sight)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 0 and err.count("mounting again with nouuid") == 2
    assert all("nouuid" in agent.devices.table[mp].options for mp in MOUNTS)


# -- retention and monitoring --------------------------------------------------------------------------------


def test_clean_deletes_only_this_snapshotters_expired_completed_snapshots(agent: Agent) -> None:
    expired, later = {**TAGS, "expires": "2020-01-01T00:00:00Z"}, {**TAGS, "expires": "2999-01-01T00:00:00Z"}
    old = [agent.ec2.add_snapshot("/mnt/solr", expired, minutes_ago=500 - i) for i in range(3)]  # old snaptastic ones
    kept = {
        agent.ec2.add_snapshot("/mnt/solr", later, minutes_ago=10),  # not expired (and the newest restore point)
        agent.ec2.add_snapshot("/mnt/logs", expired, minutes_ago=10),  # expired, but the newest of /mnt/logs
        agent.ec2.add_snapshot("/mnt/solr", expired, minutes_ago=400, state="pending"),  # never a pending one
        agent.ec2.add_snapshot("/mnt/solr", {**expired, "cluster": "other"}, minutes_ago=600),  # another cluster's
        agent.ec2.add_snapshot("/mnt/solr", {"expires": "2020-01-01T00:00:00Z"}, minutes_ago=600),  # not ours
    }
    code, out, _ = agent("clean", "snapshots", "solr", "--keep", "1", "--dry-run")
    assert code == 0 and agent.ec2.mutating_calls == 0 and {ln.split()[3] for ln in out.splitlines()} == set(old)
    assert agent("clean", "snapshots", "solr", "--keep", "1", "--force")[0] == 0
    assert set(agent.ec2.snapshots) == kept and agent.ec2.calls["DeleteSnapshot"] == 3


def test_clean_asks_first_and_a_no_or_no_answer_deletes_nothing(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    agent.ec2.add_snapshot("/mnt/solr", {**TAGS, "expires": "2020-01-01T00:00:00Z"}, minutes_ago=500)
    agent.ec2.add_snapshot("/mnt/solr", TAGS, minutes_ago=5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert agent("clean", "snapshots", "solr", "--keep", "1")[0] == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = agent("clean", "snapshots", "solr", "--keep", "1")
    assert code == 2 and "--force" in err
    assert agent.ec2.mutating_calls == 0 and len(agent.ec2.snapshots) == 2


def test_clean_volumes_deletes_a_detached_volume_its_snapshot_holds_and_keeps_any_other(agent: Agent) -> None:
    assert agent("mount-snapshots", "solr")[0] == 0
    assert agent("unmount-snapshots", "solr", "--yes")[0] == 0
    detached = set(agent.ec2.data_volumes())
    two_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    for v in agent.ec2.data_volumes().values():
        v["CreateTime"] = two_hours_ago
    crashed = agent.ec2.add_volume(tags={**TAGS, "mount_point": "/mnt/solr", "instance_id": "i-0gone"}, created=two_hours_ago)
    young = agent.ec2.add_volume(tags={**TAGS, "mount_point": "/mnt/solr", "instance_id": "i-0new"})
    code, _, err = agent("clean", "volumes", "solr", "--force")
    assert code == 0 and set(agent.ec2.data_volumes()) == {crashed, young} and crashed in err
    assert agent.ec2.calls["DeleteVolume"] == len(detached)


def test_check_backups_stale_missing_and_off_ec2(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    assert agent("mount-snapshots", "solr")[0] == 0
    code, out, _ = agent("check-backups", "--age", "1d", "--json")
    assert code == 1 and [r["snapshot_id"] for r in json.loads(out)] == [None, None]
    for mp in MOUNTS:
        vid = next(v for v, vol in agent.ec2.data_volumes().items() if {"Key": "mount_point", "Value": mp} in vol["Tags"])
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, minutes_ago=3 * 60, volume_id=vid)
    assert agent("check-backups", "--age", "2h")[0] == 1  # three hours old
    assert agent("check-backups", "--age", "4h")[0] == 0
    # On a monitoring host: no metadata service, the region from AWS_REGION, the tags from the command line.
    agent.imds.error = MetadataUnavailable("no metadata service here")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert agent("check-backups", "--age", "4h", "--role", "solr", "--cluster", "search", "--environment", "test")[0] == 0
    code, out, _ = agent("check-backups", "--age", "4h", "--tag", "role=solr", "--tag", "cluster=nosuch")
    assert code == 1 and "UNKNOWN" in out


def test_list_volumes_shows_each_mount_point(agent: Agent) -> None:
    assert agent("mount-snapshots", "solr")[0] == 0
    code, out, _ = agent("list-volumes", "solr", "--json")
    rows = {r["mount_point"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == set(MOUNTS) and all(r["mounted"] and r["volume_id"] for r in rows.values())
    assert agent.ec2.mutating_calls == 4 + 1  # the mount-snapshots run's; listing changes nothing


# -- more exit codes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["mount-snapshots", "solr", "--bogus"],
        ["mount-snapshots"],
        ["mount-snapshots", "solr", "--before", "yesterday"],
        ["mount-snapshots", "solr", "--snapshot", "/mnt/solr"],
        ["mount-snapshots", "solr", "--loglevel", "LOUD"],
        ["clean"],
        ["clean", "everything"],
        ["clean", "snapshots", "solr", "--keep", "many"],
        ["check-backups", "--age", "soon"],
        ["check-backups", "--tag", "role"],
        ["frobnicate"],
        [],
    ],
    ids=lambda argv: " ".join(argv) or "no command",
)
def test_exit_2_for_bad_arguments_with_nothing_changed(agent: Agent, argv: list[str]) -> None:
    code, _, err = agent(*argv)
    assert code == 2, err
    assert agent.ec2.mutating_calls == 0 and not agent.devices.events


@pytest.mark.parametrize(
    ("userdata", "config", "settings"),
    [
        (b"not json", None, None),
        (b'{"role": "solr", "cluster": "search"}', None, None),
        (None, "{", None),
        (None, '{"snapshotters": {"solr": {"volumes": [{"device": "/dev/sda1", "mount_point": "/mnt/solr"}]}}}', None),
        (None, None, "from snaptastic_boot import Snapshotter, EBSVolume\n\n\nclass Solr(Snapshotter):\n"
                     "    name = 'solr'\n    KEEP_SNAPSHOTS = 0\n\n    def get_volumes(self):\n"
                     "        return [EBSVolume('/dev/sdf', '/mnt/solr', size=1)]\n"),
        (None, None, "this is not python\n"),
    ],
    ids=["userdata-not-json", "userdata-missing-key", "config-not-json", "config-root-device", "settings-keep-0",
         "settings-syntax"],
)
def test_exit_2_for_bad_userdata_config_or_settings_file(agent: Agent, tmp_path: Path, userdata: bytes | None,
                                                         config: str | None, settings: str | None) -> None:
    if userdata is not None:
        agent.imds.userdata = userdata
    if config is not None:
        agent.config.write_text(config)
    if settings is not None:  # the settings file defines solr; the JSON config another snapshotter
        agent.config.write_text(json.dumps({"snapshotters": {"logs": {"volumes": [
            {"device": "/dev/sdh", "mount_point": "/mnt/other", "size": 1}]}}}))
        (tmp_path / "snaptastic_settings.py").write_text(settings)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 2, err
    assert agent.ec2.total_calls == 0 and not agent.devices.events  # refused before EC2 was asked anything


@pytest.mark.parametrize("pin", ["/mnt/solr=snap-0123456789abcdef0", "/mnt/other={ours}", "/mnt/solr={pending}"],
                         ids=["no-such-snapshot", "not-configured", "pending"])
def test_exit_2_for_a_pin_that_cannot_be_restored(agent: Agent, pin: str) -> None:
    ours = agent.ec2.add_snapshot("/mnt/solr", TAGS)
    pending = agent.ec2.add_snapshot("/mnt/solr", TAGS, state="pending")
    mount_point, snapshot_id = pin.format(ours=ours, pending=pending).split("=")
    code, _, err = agent("mount-snapshots", "solr", "--snapshot", f"{mount_point}={snapshot_id}")
    assert code == 2, err
    assert (mount_point if mount_point == "/mnt/other" else snapshot_id) in err  # names what is wrong
    assert agent.ec2.mutating_calls == 0


def test_a_pinned_snapshot_of_another_cluster_needs_force(agent: Agent) -> None:
    for mp in MOUNTS:
        agent.ec2.add_snapshot(mp, {**TAGS, "snapshot_set": "s1"}, files={"v": "ours"})
    other = agent.ec2.add_snapshot("/mnt/solr", {**TAGS, "cluster": "other"}, files={"v": "theirs"})
    code, _, err = agent("mount-snapshots", "solr", "--snapshot", f"/mnt/solr={other}")
    assert code == 2 and other in err and agent.ec2.mutating_calls == 0
    assert agent("mount-snapshots", "solr", "--snapshot", f"/mnt/solr={other}", "--force")[0] == 0
    assert {mp: agent.devices.files(mp)["v"] for mp in MOUNTS} == {"/mnt/solr": "theirs", "/mnt/logs": "ours"}


def test_exit_3_when_the_lock_cannot_be_made(agent: Agent) -> None:
    agent.run_dir.write_text("a file where the run directory should be")
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 3 and "lock" in err and agent.ec2.mutating_calls == 0


def test_snaptastic_test_exit_0_when_ready_and_3_without_tools(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    code, out, _ = agent("test")
    assert code == 0 and f"sees {INSTANCE_ID}" in out and "cluster: search" in out
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "fsfreeze" else f"/usr/sbin/{tool}")
    code, out, err = agent("test")
    assert code == 3 and "fsfreeze" in out + err
    agent.ec2_error = CredentialsMissing("no AWS credentials found")
    assert agent("test")[0] == 3


@pytest.mark.parametrize("argv", [["mount-snapshots", "solr"], ["make-snapshots", "solr"],
                                  ["unmount-snapshots", "solr", "--yes"]])
def test_exit_4_for_every_command_that_changes_volumes(agent: Agent, argv: list[str]) -> None:
    assert agent("mount-snapshots", "solr")[0] == 0
    before = agent.ec2.mutating_calls
    with lock.exclusive(agent.run_dir / "snaptastic.lock"):
        code, _, err = agent(*argv)
    assert code == 4, err
    assert agent.ec2.mutating_calls == before and not agent.devices.frozen


@pytest.mark.parametrize(
    ("setup", "argv"),
    [
        ("nothing-mounted", ["make-snapshots", "solr"]),
        ("no-device", ["mount-snapshots", "solr"]),
        ("answer-no", ["unmount-snapshots", "solr"]),
        ("detach-refused", ["unmount-snapshots", "solr", "--yes"]),
    ],
)
def test_exit_1_when_an_operation_fails(agent: Agent, monkeypatch: pytest.MonkeyPatch, setup: str, argv: list[str]) -> None:
    if setup == "no-device":
        monkeypatch.setenv("SNAPTASTIC_WAIT_TIMEOUT", "0.05")
        agent.ec2.when("AttachVolume", lambda: agent.devices.missing.update(agent.ec2.data_volumes()))
    else:
        assert agent("mount-snapshots", "solr")[0] == 0
    if setup == "nothing-mounted":
        agent.devices.umount("/mnt/logs")
    elif setup == "answer-no":
        monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
    elif setup == "detach-refused":
        agent.ec2.fail("DetachVolume", "UnauthorizedOperation")
    code, _, err = agent(*argv)
    assert code == 1, err
    assert not agent.devices.frozen


def test_make_snapshots_after_watch_released_the_volumes_has_nothing_to_do(agent: Agent) -> None:
    """At the shutdown that follows a termination notice, the volumes watch released are gone: not an error."""
    assert agent("mount-snapshots", "solr")[0] == 0
    for mp in MOUNTS:
        agent.devices.umount(mp)
    handled.save(agent.run_dir / "watch-notices.json", frozenset({"spot:terminate"}), released=False)
    assert agent("make-snapshots", "solr")[0] == 1  # not released by watch: a missing mount is an error
    handled.save(agent.run_dir / "watch-notices.json", frozenset({"spot:terminate"}), released=True)
    code, _, err = agent("make-snapshots", "solr")
    assert code == 0 and "snaptastic watch snapshotted its volumes and released them" in err, err
    assert agent.ec2.calls["CreateSnapshots"] == 0 and not agent.devices.frozen
    assert agent("mount-snapshots", "solr")[0] == 0  # mounted again (by hand): snapshotted as ever
    assert agent("make-snapshots", "solr")[0] == 0 and agent.ec2.calls["CreateSnapshots"] == 1


def test_the_bug_path_with_verbose_shows_the_traceback(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("VolumeId")

    monkeypatch.setattr(agent.ec2, "describe_snapshots", broken)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 1 and "this is a bug" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        cli.main(["mount-snapshots", "solr", "-v"])
    assert "this is a bug" in agent.capsys.readouterr().err


def test_an_interrupt_is_exit_1_and_version_is_exit_0(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(agent.ec2, "describe_snapshots", interrupted)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 1 and "interrupted" in err
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0


# -- real signals, in this process ----------------------------------------------------------------------------


@pytest.fixture
def sigterm_caught() -> Iterator[list[int]]:
    """A SIGTERM handler of the test's own, so that a signal the agent does not handle cannot end pytest."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    yield seen
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_mount_snapshots_stops_between_steps_and_a_rerun_finishes(agent: Agent, sigterm_caught: list[int]) -> None:
    def first_create_only() -> None:
        if agent.ec2.calls["CreateVolume"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    agent.ec2.when("CreateVolume", first_create_only)
    code, _, err = agent("mount-snapshots", "solr")
    assert code == 1 and "stopped by SIGTERM after creating volumes" in err
    assert len(agent.ec2.data_volumes()) == 2 and agent.ec2.calls["AttachVolume"] == 0 and not sigterm_caught
    assert agent("mount-snapshots", "solr")[0] == 0
    assert len(agent.ec2.data_volumes()) == 2 and set(agent.devices.table) == {"/", *MOUNTS}


def test_sigterm_while_frozen_thaws_at_once_and_exits(agent: Agent, sigterm_caught: list[int]) -> None:
    assert agent("mount-snapshots", "solr")[0] == 0
    frozen_then: list[set[str]] = []

    def signal_arrives() -> None:  # while the agent waits for CreateSnapshots' answer
        frozen_then.append(set(agent.devices.frozen))
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached: the handler thaws and exits before the next line of Python")

    agent.ec2.when("CreateSnapshots", signal_arrives)
    with pytest.raises(SystemExit) as exited:
        cli.main(["make-snapshots", "solr"])
    assert exited.value.code == 128 + signal.SIGTERM
    assert frozen_then == [set(MOUNTS)] and not agent.devices.frozen and not agent.ec2.snapshots
    assert sorted(e for e in agent.devices.events if e.startswith("thaw")) == sorted(f"thaw {mp}" for mp in MOUNTS)
    assert sigterm_caught == [signal.SIGTERM]  # the handler that was there before was called too


def test_a_failed_delete_on_termination_call_is_made_good_by_the_next_run_and_a_reboot_makes_none(agent: Agent) -> None:
    agent.ec2.fail("ModifyInstanceAttribute", "InternalError", times=1)
    assert agent("mount-snapshots", "solr")[0] == 1
    assert agent.ec2.delete_on_termination() == {"/dev/sdf": False, "/dev/sdg": False}
    assert agent("mount-snapshots", "solr")[0] == 0
    assert agent.ec2.delete_on_termination() == {"/dev/sdf": True, "/dev/sdg": True}
    for mp in MOUNTS:
        agent.devices.umount(mp)  # a reboot
    agent.ec2.calls.clear()
    assert agent("mount-snapshots", "solr")[0] == 0
    assert agent.ec2.mutating_calls == 0 and set(agent.devices.table) == {"/", *MOUNTS}
