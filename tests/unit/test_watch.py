"""snaptastic watch against in-memory EC2, metadata and devices: the loop, what each notice sets off, and the
metadata and Auto Scaling adapters it adds. No sleeps: the loop's clock and wait are the test's."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from snaptastic_boot.commands import watch
from snaptastic_boot.commands.context import Inputs
from snaptastic_boot.errors import MetadataUnavailable, OperationFailed
from snaptastic_boot.plan import notices
from snaptastic_boot.plan.notices import History
from snaptastic_boot.system import lock
from snaptastic_boot.system.autoscaling import AutoScaling
from snaptastic_boot.system.imds import ImdsClient
from tests.unit.fakes import INSTANCE_ID, FakeImds
from tests.unit.test_commands import MOUNTS, Agent, agent  # noqa: F401  (the fixture)
from tests.unit.test_imds import Server, server  # noqa: F401  (the fixture)

GROUP_TAG = "aws:autoscaling:groupName"


@dataclass
class NoticeImds(FakeImds):
    """The fake metadata service with the notice paths; `failing` polls raise as an unreachable service."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    failing: int = 0

    def poll(self, path: str) -> bytes | None:
        if self.failing:
            if path == notices.PATHS[0]:
                self.failing -= 1
            raise MetadataUnavailable(f"metadata service did not answer {path}: HTTP 503")
        return self.bodies.get(path)

    def spot(self, action: str = "terminate") -> None:
        self.bodies[notices.SPOT_PATH] = json.dumps({"action": action, "time": "2026-11-29T01:00:00Z"}).encode()


@dataclass
class FakeAutoScaling:
    agent: Agent
    completed: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    error: Exception | None = None

    def complete_lifecycle_action(self, group: str, hook: str, instance_id: str, result: str = "CONTINUE") -> None:
        if self.error is not None:
            raise self.error
        # With the number of CreateSnapshots calls made by then: the order of the two.
        self.completed.append((group, hook, instance_id, result, self.agent.ec2.calls["CreateSnapshots"]))


class Script:
    """The loop's clock and wait: each wait advances the clock and runs the step due; then it stops the loop."""

    def __init__(self, steps: list[Callable[[], None]]) -> None:
        self.now = 0.0
        self.steps = list(steps)
        self.stop = threading.Event()
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if self.steps:
            self.steps.pop(0)()
        else:
            self.stop.set()


def nothing() -> None:
    pass


@pytest.fixture
def watching(agent: Agent) -> Agent:  # noqa: F811
    agent.imds = NoticeImds()
    assert agent("mount-snapshots", "solr")[0] == 0
    return agent


def run_watch(on: Agent, steps: list[Callable[[], None]], *args: Any, asg: FakeAutoScaling | None = None,
              names: tuple[str, ...] = ("solr",), **kw: Any) -> Script:
    script = Script(steps)
    code = watch.run(list(names), Inputs(), adapters=on.adapters(), autoscaling=lambda region, t: asg,
                     stop=script.stop, wait=script.wait, clock=script.clock, interval=1.0, **kw)
    assert code == 0
    return script


def test_a_spot_notice_snapshots_once_across_polls_and_restarts(watching: Agent) -> None:
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    run_watch(watching, [nothing, lambda: imds.spot("stop"), nothing, nothing])
    assert watching.ec2.calls["CreateSnapshots"] == 1
    assert not watching.devices.frozen and {f"thaw {mp}" for mp in MOUNTS} <= set(watching.devices.events)
    state = json.loads((watching.run_dir / "watch-notices.json").read_text())
    assert state["released"] is False and len(state["handled"]) == 1
    run_watch(watching, [nothing, nothing])  # a restart: the notice still stands, and was handled
    assert watching.ec2.calls["CreateSnapshots"] == 1
    assert set(watching.devices.table) == {"/", *MOUNTS}  # a stop notice: the volumes stay


def test_polls_keep_their_interval(watching: Agent) -> None:
    script = run_watch(watching, [nothing, nothing])
    assert script.waits == [1.0, 1.0, 1.0]


def test_terminate_with_reuse_releases_the_volumes_without_the_detached_mark(watching: Agent) -> None:
    vols = [{"device": d, "mount_point": mp, "size": 1, "delete_on_termination": False}
            for d, mp in zip(("/dev/sdf", "/dev/sdg"), MOUNTS)]
    watching.config.write_text(json.dumps({"snapshotters": {"solr": {"volumes": vols, "reuse_volumes": True}}}))
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    run_watch(watching, [imds.spot, nothing])
    assert watching.ec2.calls["CreateSnapshots"] == 1 and watching.ec2.calls["DetachVolume"] == 2
    assert set(watching.devices.table) == {"/"}
    data = watching.ec2.data_volumes().values()
    assert all(not v["Attachments"] and "detached" not in {t["Key"] for t in v["Tags"]} for v in data)
    assert "watch-notices.json" in os.listdir(watching.run_dir)
    assert json.loads((watching.run_dir / "watch-notices.json").read_text())["released"] is True


def test_terminate_without_reuse_keeps_the_volumes(watching: Agent) -> None:
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    run_watch(watching, [imds.spot])
    assert watching.ec2.calls["CreateSnapshots"] == 1 and watching.ec2.calls["DetachVolume"] == 0


def test_lifecycle_terminated_snapshots_then_completes_once(watching: Agent) -> None:
    watching.ec2.instances[INSTANCE_ID]["Tags"] = [{"Key": GROUP_TAG, "Value": "web"}]
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching)
    run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"}), nothing, nothing],
              asg=asg, lifecycle_hook="drain")
    assert asg.completed == [("web", "drain", INSTANCE_ID, "CONTINUE", 1)]


def test_a_failing_snapshot_still_completes_the_lifecycle_action(watching: Agent, caplog: pytest.LogCaptureFixture) -> None:
    watching.ec2.instances[INSTANCE_ID]["Tags"] = [{"Key": GROUP_TAG, "Value": "web"}]
    watching.ec2.fail("CreateSnapshots", "InternalError")
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching)
    with caplog.at_level(logging.INFO):
        run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"})], asg=asg,
                  lifecycle_hook="drain")
    assert [c[:4] for c in asg.completed] == [("web", "drain", INSTANCE_ID, "CONTINUE")]
    assert "solr: make-snapshots failed: EC2 CreateSnapshots failed: InternalError" in caplog.text
    assert "completing the lifecycle action anyway" in caplog.text
    assert not watching.devices.frozen


def test_a_failing_lifecycle_call_is_logged_and_the_watch_goes_on(watching: Agent, caplog: pytest.LogCaptureFixture) -> None:
    watching.ec2.instances[INSTANCE_ID]["Tags"] = [{"Key": GROUP_TAG, "Value": "web"}]
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching, error=OperationFailed("Auto Scaling CompleteLifecycleAction failed: ValidationError"))
    run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"}), nothing], asg=asg,
              lifecycle_hook="drain")
    assert "lifecycle hook drain of web: Auto Scaling CompleteLifecycleAction failed" in caplog.text


def test_an_instance_outside_a_group_is_said_at_start_and_at_the_notice(watching: Agent, caplog: pytest.LogCaptureFixture) -> None:
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching)
    run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"})], asg=asg,
              lifecycle_hook="drain")
    assert asg.completed == [] and watching.ec2.calls["CreateSnapshots"] == 1
    assert caplog.text.count("carries no aws:autoscaling:groupName tag") == 2


def test_several_snapshotters_are_snapshotted_at_once_and_the_action_completed_once(watching: Agent) -> None:
    vols = {"solr": [{"device": "/dev/sdf", "mount_point": MOUNTS[0], "size": 1}],
            "logs": [{"device": "/dev/sdg", "mount_point": MOUNTS[1], "size": 1}]}
    watching.config.write_text(json.dumps({"snapshotters": {n: {"volumes": v} for n, v in vols.items()}}))
    watching.ec2.instances[INSTANCE_ID]["Tags"] = [{"Key": GROUP_TAG, "Value": "web"}]
    both = threading.Barrier(2, timeout=5)
    # Each CreateSnapshots waits for the other: they only both return if they run at the same time.
    watching.ec2.when("CreateSnapshots", lambda: both.wait())
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching)
    run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"})], asg=asg,
              lifecycle_hook="drain", names=("solr", "logs"))
    assert watching.ec2.calls["CreateSnapshots"] == 2
    assert [c[4] for c in asg.completed] == [2]


def test_the_metadata_service_failing_does_not_stop_it_and_is_logged_rarely(watching: Agent,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    imds.failing = 90
    with caplog.at_level(logging.INFO):
        script = run_watch(watching, [nothing] * 90 + [imds.spot, nothing])
    assert watching.ec2.calls["CreateSnapshots"] == 1
    failing = [r for r in caplog.records if "did not answer" in r.getMessage()]
    assert 1 <= len(failing) <= 3, [r.getMessage() for r in failing]
    assert "metadata service answers again, after 90 failed polls" in caplog.text
    assert len(script.waits) == 93


def test_a_held_lock_is_waited_for_then_the_lifecycle_action_is_still_completed(
        watching: Agent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(watch, "LOCK_WAIT", 0.2)
    watching.ec2.instances[INSTANCE_ID]["Tags"] = [{"Key": GROUP_TAG, "Value": "web"}]
    imds: NoticeImds = watching.imds  # type: ignore[assignment]
    asg = FakeAutoScaling(watching)
    with lock.exclusive(watching.run_dir / "snaptastic.lock"):
        run_watch(watching, [lambda: imds.bodies.update({notices.LIFECYCLE_PATH: b"Terminated"})], asg=asg,
                  lifecycle_hook="drain")
    assert watching.ec2.calls["CreateSnapshots"] == 0 and len(asg.completed) == 1
    assert "no snapshot for the notice" in caplog.text


def test_the_history_survives_a_corrupt_file(tmp_path: Path) -> None:
    from snaptastic_boot.system import handled

    path = tmp_path / "watch-notices.json"
    path.write_text("{not json")
    assert handled.load(path) == (frozenset(), False)
    handled.save(path, frozenset({"a"}), True)
    assert handled.load(path) == (frozenset({"a"}), True)


def test_sigterm_sets_the_stop_flag() -> None:
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    with watch._stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
    assert signal.getsignal(signal.SIGTERM) == previous


@pytest.mark.parametrize("argv", [["watch"], ["watch", "solr", "--interval", "0"], ["watch", "solr", "--interval", "x"]])
def test_bad_arguments_are_exit_2(watching: Agent, argv: list[str]) -> None:
    code, _, err = watching(*argv)
    assert code == 2 and "error:" in err


def test_the_loop_alone_with_a_scripted_poll() -> None:
    seen: list[tuple[notices.Notice, ...]] = [(), (notices.Notice(notices.REBALANCE, "k", "recommendation"),), ()]
    acted: list[Any] = []
    saved: list[History] = []
    script = Script([nothing, nothing])
    w = watch.Watcher(lambda: seen.pop(0), acted.append, History(), saved.append, rebalance=True, lifecycle_hook=False,
                      interval=5.0, stop=script.stop, wait=script.wait, clock=script.clock)
    assert w.run() == 0
    assert len(acted) == 1 and acted[0].snapshot and saved[-1].handled == frozenset({"k"})


# -- the metadata client's polls -------------------------------------------------------------------------------


def test_polls_reuse_one_token_until_shortly_before_it_expires(server: Server) -> None:  # noqa: F811
    now = [0.0]
    client = ImdsClient(server.url, sleeps=(), token_ttl=300, clock=lambda: now[0])
    for _ in range(10):
        assert client.poll("latest/meta-data/spot/instance-action") is None  # 404: no notice
        now[0] += 5
    assert len(server.tokens) == 1
    now[0] = 300 - 30  # inside the renewal margin
    client.poll("latest/meta-data/instance-id")
    assert len(server.tokens) == 2 and client.tokens_fetched == 2


def test_a_poll_gets_a_new_token_on_401_and_fails_clearly(server: Server) -> None:  # noqa: F811
    client = ImdsClient(server.url, sleeps=())
    assert client.poll("latest/meta-data/instance-id") == b"i-0abc"
    server.tokens.clear()  # the service restarted and forgot its tokens
    assert client.poll("latest/meta-data/instance-id") == b"i-0abc" and len(server.tokens) == 1
    server.get_status = 503
    with pytest.raises(MetadataUnavailable, match="HTTP 503"):
        client.poll("latest/meta-data/instance-id")


# -- the Auto Scaling adapter ----------------------------------------------------------------------------------


class StubClient:
    def __init__(self, errors: list[tuple[str, int]]) -> None:
        self.errors = errors
        self.calls: list[dict[str, str]] = []

    def complete_lifecycle_action(self, **kwargs: str) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.errors:
            code, status = self.errors.pop(0)
            raise botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"},
                                                   "ResponseMetadata": {"HTTPStatusCode": status}},
                                                  "CompleteLifecycleAction")
        return {}


def test_complete_lifecycle_action_retries_throttling_briefly() -> None:
    client = StubClient([("Throttling", 400), ("InternalFailure", 500)])
    slept: list[float] = []
    AutoScaling("us-east-1", client=client, sleep=slept.append).complete_lifecycle_action("web", "drain", "i-1")
    assert len(client.calls) == 3 and slept == [0.5, 1.0]
    assert client.calls[0] == {"AutoScalingGroupName": "web", "LifecycleHookName": "drain", "InstanceId": "i-1",
                               "LifecycleActionResult": "CONTINUE"}


def test_complete_lifecycle_action_fails_at_once_on_a_validation_error() -> None:
    client = StubClient([("ValidationError", 400)])
    with pytest.raises(OperationFailed, match="Auto Scaling CompleteLifecycleAction failed: ValidationError"):
        AutoScaling("us-east-1", client=client, sleep=lambda s: None).complete_lifecycle_action("web", "drain", "i-1")
    assert len(client.calls) == 1
