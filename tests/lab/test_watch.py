"""snaptastic watch through the CLI: Spot and Auto Scaling notices from the lab's metadata service."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import botocore.exceptions
import pytest

from tests.lab.agent import configure, ok, our_volumes, volumes

SPOT_PATH = "/latest/meta-data/spot/instance-action"
HOOK = "snaptastic-terminate"
MUTATING_ASG = ("CompleteLifecycleAction",)


class Watch:
    """`snaptastic watch solr --interval 1 ...` running in the background, its log in a file."""

    def __init__(self, lab: Any, *args: str, interval: str = "1") -> None:
        self.lab = lab
        self.log = Path(lab.workdir) / f"watch-{time.monotonic_ns()}.log"
        self._file = self.log.open("w")
        self.proc = subprocess.Popen(["snaptastic", "watch", "solr", "--interval", interval, *args], env=lab.env,
                                     stdout=subprocess.DEVNULL, stderr=self._file, text=True)
        self._base = self.polls()
        self.wait_polls(1, timeout=60)

    @property
    def text(self) -> str:
        return self.log.read_text()

    def polls(self) -> int:
        return sum(1 for method, path, _ in self.lab.imds.requests if method == "GET" and path == SPOT_PATH)

    def wait_polls(self, n: int, timeout: float = 30) -> None:
        """Until the watch has polled `n` times since the last `mark()`."""
        until(lambda: self.polls() >= n + self._base, timeout, f"{n} more polls", self)

    def mark(self) -> None:
        self._base = self.polls()

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._file.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._file.close()


def until(ready: Callable[[], bool], timeout: float, what: str, watch: Watch | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if watch is not None and watch.proc.poll() is not None:
            raise AssertionError(f"the watch exited ({watch.proc.returncode}) before {what}:\n{watch.text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s" + (f":\n{watch.text}" if watch else ""))
        time.sleep(0.05)


def call_times(lab: Any, action: str) -> list[float]:
    return [t for t, a in lab.calls if a == action]


def mounted(lab: Any, n: int = 2, **entry: Any) -> None:
    configure(lab, volumes(lab, n, **entry.pop("volume", {})), **entry)
    ok(lab.run("mount-snapshots", "solr"))
    for i in range(n):
        (lab.mount_root / f"data{i}" / "v").write_text("written before the notice")


def test_a_spot_notice_is_snapshotted_at_once_and_once(lab: Any) -> None:
    mounted(lab)
    watch = Watch(lab)
    try:
        lab.reset_calls()
        noticed = time.time()
        lab.spot_notice(action="stop")
        until(lambda: bool(call_times(lab, "CreateSnapshots")), 60, "CreateSnapshots", watch)
        # Within one poll interval (1 s) of the notice, plus the make-snapshots reads before the call.
        assert call_times(lab, "CreateSnapshots")[0] - noticed < 1 + 15
        snaps = lab.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        assert len({t["Value"] for s in snaps for t in s["Tags"] if t["Key"] == "snapshot_set"}) == 1
        watch.mark()
        watch.wait_polls(3)  # the notice still stands on later polls
        assert len(call_times(lab, "CreateSnapshots")) == 1
        assert all(a.startswith("Describe") or a == "CreateSnapshots" for _, a in lab.calls), lab.calls
        code, _ = watch.stop()
        assert code == 0, watch.text
        assert "Spot interruption notice (stop)" in watch.text
    finally:
        watch.kill()
    # A stop notice: the instance comes back, its volumes stay attached and mounted.
    assert all(v["State"] == "in-use" for v in our_volumes(lab))
    again = Watch(lab)  # a restart of the watch sees the same notice: it was handled already
    try:
        again.mark()
        again.wait_polls(3)
        assert len(call_times(lab, "CreateSnapshots")) == 1, again.text
        assert again.stop()[0] == 0
    finally:
        again.kill()


def test_lifecycle_terminated_snapshots_then_completes_the_action(lab: Any) -> None:
    mounted(lab)
    group = lab.join_auto_scaling_group(hook=HOOK)
    watch = Watch(lab, "--lifecycle-hook", HOOK)
    try:
        lab.reset_calls()
        lab.set_lifecycle_state("Terminated")
        until(lambda: bool(lab.lifecycle_actions), 60, "CompleteLifecycleAction", watch)
        done = lab.lifecycle_actions[0]
        assert (done.group, done.hook, done.instance_id, done.result) == (group, HOOK, lab.instance_id, "CONTINUE")
        snapshots = call_times(lab, "CreateSnapshots")
        assert len(snapshots) == 1 and snapshots[0] < done.time
        watch.mark()
        watch.wait_polls(3)
        assert [a for _, a in lab.autoscaling_calls] == ["CompleteLifecycleAction"]
        assert len(lab.lifecycle_actions) == 1 and len(call_times(lab, "CreateSnapshots")) == 1
        assert watch.stop()[0] == 0
    finally:
        watch.kill()
    # reuse_volumes is off: nothing was detached.
    assert all(v["State"] == "in-use" for v in our_volumes(lab))


def test_a_failing_snapshot_still_completes_the_lifecycle_action(lab: Any) -> None:
    mounted(lab, 1)
    group = lab.join_auto_scaling_group(hook=HOOK)
    lab.faults.fail_actions = {"CreateSnapshots": (400, "IncorrectState", "The volume is not in a state to snapshot.")}
    watch = Watch(lab, "--lifecycle-hook", HOOK)
    try:
        lab.set_lifecycle_state("Terminated")
        until(lambda: bool(lab.lifecycle_actions), 60, "CompleteLifecycleAction", watch)
        assert lab.lifecycle_actions[0].group == group and lab.lifecycle_actions[0].result == "CONTINUE"
        assert call_times(lab, "CreateSnapshots")[0] < lab.lifecycle_actions[0].time
        text = watch.text
        assert "make-snapshots failed" in text and "IncorrectState" in text
        assert "completing the lifecycle action anyway" in text
        assert watch.stop()[0] == 0
    finally:
        watch.kill()


def test_no_notice_no_change_in_a_minute(lab: Any) -> None:
    mounted(lab, 1)
    lab.join_auto_scaling_group(hook=HOOK)
    watch = Watch(lab, "--lifecycle-hook", HOOK)
    try:
        lab.reset_calls()
        lab.imds.requests.clear()
        time.sleep(60)
        assert watch.proc.poll() is None, watch.text
        assert all(action.startswith("Describe") for _, action in lab.calls), lab.calls
        assert lab.autoscaling_calls == [] and lab.lifecycle_actions == []
        assert 40 <= watch.polls() <= 70, watch.polls()
        # One token for the whole minute: reused across polls, not asked for each.
        assert [p for m, p, _ in lab.imds.requests if m == "PUT"] == []
        assert watch.stop()[0] == 0
    finally:
        watch.kill()
    assert "notice" not in watch.text.lower().replace("watching for spot and auto scaling notices", "")


def test_sigterm_stops_it_promptly(lab: Any) -> None:
    mounted(lab, 1)
    watch = Watch(lab, interval="30")
    try:
        code, took = watch.stop()
        assert code == 0, watch.text
        assert took < 5, f"took {took:.1f}s to stop"
        assert "watch stopped" in watch.text
    finally:
        watch.kill()


def test_a_metadata_service_failing_for_a_while_does_not_kill_it(lab: Any) -> None:
    mounted(lab, 1)
    watch = Watch(lab)
    try:
        lab.faults.imds_fail_for = 6.0
        time.sleep(3)
        lab.faults.imds_down = True
        time.sleep(3)
        lab.faults.imds_down = False
        until(lambda: not lab.faults.imds_failing(), 10, "the end of the outage")
        assert watch.proc.poll() is None, watch.text
        lab.reset_calls()
        lab.spot_notice(action="terminate")
        until(lambda: bool(call_times(lab, "CreateSnapshots")), 60, "CreateSnapshots after the outage", watch)
        text = watch.text
        # Rate-limited: one line when it starts failing (and at most one a minute), not one per poll.
        assert 1 <= text.count("metadata service") - text.count("metadata service answers again") <= 3, text
        assert "metadata service answers again" in text
        assert watch.stop()[0] == 0
    finally:
        watch.kill()


def test_rebalance_snapshots_by_default_and_can_be_turned_off(lab: Any) -> None:
    mounted(lab, 1)
    off = Watch(lab, "--no-rebalance")
    try:
        lab.reset_calls()
        lab.rebalance_notice()
        off.mark()
        off.wait_polls(3)
        assert call_times(lab, "CreateSnapshots") == []
        assert "snapshots on rebalance recommendations are off" in off.text
        assert off.stop()[0] == 0
    finally:
        off.kill()
    lab.clear_notices()
    on = Watch(lab)
    try:
        lab.rebalance_notice()
        until(lambda: bool(call_times(lab, "CreateSnapshots")), 60, "CreateSnapshots", on)
        assert on.stop()[0] == 0
    finally:
        on.kill()
    assert all(v["State"] == "in-use" for v in our_volumes(lab))  # a recommendation releases nothing


def test_a_terminate_notice_hands_the_volumes_to_the_replacement(lab: Any) -> None:
    mounted(lab, 2, volume={"delete_on_termination": False}, reuse_volumes=True)
    left = {v["VolumeId"] for v in our_volumes(lab)}
    watch = Watch(lab)
    try:
        lab.spot_notice(action="terminate")
        until(lambda: all(v["State"] == "available" for v in lab.ec2.describe_volumes(VolumeIds=list(left))["Volumes"]),
              120, "the volumes detached", watch)
        assert len(call_times(lab, "CreateSnapshots")) == 1
        assert call_times(lab, "CreateSnapshots")[0] < call_times(lab, "DetachVolume")[0]
        assert watch.stop()[0] == 0
    finally:
        watch.kill()
    vols = lab.ec2.describe_volumes(VolumeIds=list(left))["Volumes"]
    # Left by a replaced instance, not detached on purpose: no `detached` tag.
    assert all("detached" not in {t["Key"] for t in v.get("Tags", [])} for v in vols)
    lab.terminate_instance()
    lab.new_instance()
    lab.reset_calls()
    result = ok(lab.run("mount-snapshots", "solr"))
    assert lab.call_counts()["CreateVolume"] == 0 and "reattached" in result.stderr
    assert {v["VolumeId"] for v in our_volumes(lab) if v["State"] == "in-use"} == left
    assert {(lab.mount_root / f"data{i}" / "v").read_text() for i in range(2)} == {"written before the notice"}


def test_the_labs_lifecycle_actions_follow_auto_scaling(lab: Any) -> None:
    """CompleteLifecycleAction as AWS documents it: only for an instance waiting on that hook, once."""
    group = lab.join_auto_scaling_group(hook=HOOK)
    tags = lab.ec2.describe_instances(InstanceIds=[lab.instance_id])["Reservations"][0]["Instances"][0]["Tags"]
    assert {"Key": "aws:autoscaling:groupName", "Value": group} in tags
    client = lab.autoscaling
    complete = {"AutoScalingGroupName": group, "LifecycleHookName": HOOK, "InstanceId": lab.instance_id,
                "LifecycleActionResult": "CONTINUE"}
    with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action"):
        client.complete_lifecycle_action(**complete)
    lab.set_lifecycle_state("Terminated")
    with pytest.raises(botocore.exceptions.ClientError, match="No Lifecycle Hook found"):
        client.complete_lifecycle_action(**{**complete, "LifecycleHookName": "other"})
    client.complete_lifecycle_action(**complete)
    with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action"):
        client.complete_lifecycle_action(**complete)
    assert [(a.group, a.hook, a.instance_id, a.result) for a in lab.lifecycle_actions] == [
        (group, HOOK, lab.instance_id, "CONTINUE")]


def test_with_reuse_the_lifecycle_action_is_completed_before_the_volumes_are_released(lab: Any) -> None:
    mounted(lab, 1, volume={"delete_on_termination": False}, reuse_volumes=True)
    lab.join_auto_scaling_group(hook=HOOK)
    (volume,) = our_volumes(lab)
    watch = Watch(lab, "--lifecycle-hook", HOOK)
    try:
        lab.set_lifecycle_state("Terminated")
        until(lambda: lab.ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"][0]["State"] == "available",
              120, "the volume detached", watch)
        (done,) = lab.lifecycle_actions
        assert call_times(lab, "CreateSnapshots")[0] < done.time < call_times(lab, "DetachVolume")[0]
        assert watch.stop()[0] == 0
    finally:
        watch.kill()
