"""The lab: EC2 (moto behind the emulating middleware), an IMDSv2 server and loop-backed devices.

All on 127.0.0.1. The agent runs unchanged as a subprocess with `lab.env`; tests set up and check state
through `lab.ec2` and the files and device nodes under the lab's workdir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Union

from snaptastic_lab import devices
from snaptastic_lab.faults import Faults
from snaptastic_lab.imds import InstanceIdentity, MetadataService

ACCOUNT_ID = "123456789012"
IMAGE_ID = "ami-0b5eea76982371e91"
INSTANCE_TYPE = "t3.large"
ROOT_DEVICE = "/dev/sda1"
DEFAULT_USERDATA: dict[str, Any] = {"role": "solr", "cluster": "solr-cluster", "environment": "test"}

Userdata = Union[bytes, str, dict, None]
SAME_USERDATA = object()  # new_instance(): keep the current userdata

# Environment that would let the agent find credentials, a region or endpoints somewhere other than the lab.
_SCRUBBED = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_EC2_METADATA_V1_DISABLED",
    "SNAPTASTIC_CONFIG",
)


def userdata_bytes(userdata: Userdata) -> bytes | None:
    if userdata is None:
        return None
    if isinstance(userdata, dict):
        return json.dumps(userdata).encode()
    if isinstance(userdata, str):
        return userdata.encode()
    return bytes(userdata)


@dataclass(frozen=True)
class Neighbour:
    """An instance running beside the lab's current one; `env` points the agent at it."""

    instance_id: str
    env: dict[str, str]


class Lab:
    """A local EC2 + EBS + IMDS for one instance at a time; see the package docstring for the layout."""

    def __init__(
        self,
        workdir: Path,
        device_style: str = "nvme",
        userdata: Userdata = DEFAULT_USERDATA,
        region: str = "us-east-1",
        config: Path | None = None,
        seed: int = 0,
    ) -> None:
        if device_style not in devices.DEVICE_STYLES:
            raise ValueError(f"device_style must be one of {devices.DEVICE_STYLES}, not {device_style!r}")
        self.workdir = Path(workdir).resolve()
        self.device_style = device_style
        self.region = region
        self.availability_zone = region + "a"
        self.config = config
        self.faults = Faults(seed)
        self.dev_root = self.workdir / "dev"
        self.sys_root = self.workdir / "sys"
        self.fstab = self.workdir / "etc" / "fstab"
        self.run_dir = self.workdir / "run"
        self.mount_root = self.workdir / "mnt"
        self.instance_id = ""
        self.env: dict[str, str] = {}
        self._userdata = userdata_bytes(userdata)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._emulator: Any = None
        self._autoscaling: Any = None
        self._neighbour_imds: list[MetadataService] = []
        self._imds: MetadataService | None = None
        self._internal: Any = None
        self._ec2: Any = None
        self.endpoint = ""
        self.account_id = ""
        self._started = False
        self._store = devices.ImageStore(self.workdir / "store")

    # Life cycle

    def start(self) -> Lab:
        for path in (self.dev_root, self.sys_root / "block", self.fstab.parent, self.run_dir, self.mount_root, self.workdir / "aws"):
            path.mkdir(parents=True, exist_ok=True)
        store = self._store.open()
        for name in ("volumes", "snapshots"):
            (store / name).mkdir(exist_ok=True)
            link = self.workdir / name
            if not link.exists():
                link.symlink_to(store / name)
        self.fstab.write_text(f"# /etc/fstab: static file system information.\nUUID={uuid.uuid4()} / ext4 defaults,discard 0 1\n")
        self.account_id = _claim_account()
        self._started = True
        try:
            self._serve_ec2()
            self._internal = self._client(internal=True)
            self._ec2 = self._client()
            identity = self._launch(self._userdata)
            self._imds = MetadataService(identity, self.faults)
            self._imds.start()
            self.env = self._build_env()
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_ec2(self) -> None:
        from moto.moto_server.werkzeug_app import create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        from snaptastic_lab.ec2 import Ec2Emulator

        class QuietHandler(WSGIRequestHandler):
            disable_nagle_algorithm = True  # as for the metadata service: EC2 does not add delayed-ACK waits

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

        self._emulator = Ec2Emulator(
            create_backend_app("ec2"),
            _fresh_backend(self.account_id, self.region),
            self.faults,
            self.workdir,
            self.dev_root,
            self.sys_root,
            self.device_style,
            self.account_id,
            regional=lambda region: _fresh_backend(self.account_id, region),
        )
        self._emulator.start_clock()
        from snaptastic_lab.autoscaling import AutoScalingEmulator, Router
        from snaptastic_lab.ec2 import INTERNAL_HEADER

        self._autoscaling = AutoScalingEmulator(create_backend_app("autoscaling"),
                                                _fresh_autoscaling_backend(self.account_id, self.region), self.faults,
                                                self.account_id, INTERNAL_HEADER)
        app = Router(self._emulator, self._autoscaling)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="lab-ec2", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Unmount what is under the workdir, free every loop device, stop the servers."""
        if not self._started:
            return
        self._started = False
        if self._emulator is not None:
            self._emulator.stopped.set()  # calls held by hang_actions are dropped, not processed
        for point in devices.mounts_under(self.workdir):
            if point == str(self._store.root):
                continue  # the image store goes last, once no loop device uses its files
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                devices.lazy_unmount(point)
        if self._emulator is not None:
            self._emulator.teardown_all()
        for folder in (self.workdir / "volumes", self.workdir / "snapshots"):
            for image in folder.glob("*.img") if folder.exists() else []:
                for loop in devices.loops_for(image):
                    devices.loop_detach(loop)
        self._store.close()
        if self._imds is not None:
            self._imds.close()
        for imds in self._neighbour_imds:
            imds.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _release_account(self.account_id)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        self.stop()

    # Clients and environment

    def _client(self, internal: bool = False, max_attempts: int | None = None, read_timeout: float = 120,
                service: str = "ec2") -> Any:
        from botocore.config import Config

        from snaptastic_lab.ec2 import INTERNAL_HEADER

        retries: dict[str, Any] = {"mode": "standard"}
        if max_attempts is not None:
            retries["total_max_attempts"] = max_attempts
        client = _session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
            config=Config(retries=retries, connect_timeout=5, read_timeout=read_timeout),
        )
        if internal:

            def mark(request: Any, **_: Any) -> None:
                request.headers[INTERNAL_HEADER] = "internal"

            client.meta.events.register(f"before-sign.{service}.*", mark)
        return client

    @property
    def ec2(self) -> Any:
        """A boto3 EC2 client on the lab with static credentials; its calls are recorded, faults apply."""
        return self._ec2

    def ec2_client(self, max_attempts: int | None = None, read_timeout: float = 120) -> Any:
        """A fresh client; `max_attempts=1` turns retries off, so faults are seen as they are."""
        return self._client(max_attempts=max_attempts, read_timeout=read_timeout)

    @property
    def imds_endpoint(self) -> str:
        assert self._imds is not None
        return self._imds.endpoint

    @property
    def imds(self) -> MetadataService:
        assert self._imds is not None
        return self._imds

    def _build_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        no_proxy = ",".join(p for p in (env.get("NO_PROXY", ""), "127.0.0.1", "localhost") if p)
        env.update(
            {
                "AWS_ENDPOINT_URL_EC2": self.endpoint,
                # The same endpoint: the lab routes a request by the service of its SigV4 credential scope.
                "AWS_ENDPOINT_URL_AUTO_SCALING": self.endpoint,
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds_endpoint,
                "AWS_EC2_METADATA_DISABLED": "false",
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws" / "credentials"),
                "AWS_CONFIG_FILE": str(self.workdir / "aws" / "config"),
                "SNAPTASTIC_DEV_ROOT": str(self.dev_root),
                "SNAPTASTIC_SYS_ROOT": str(self.sys_root),
                "SNAPTASTIC_FSTAB": str(self.fstab),
                "SNAPTASTIC_RUN_DIR": str(self.run_dir),
                # The lab's agents leave this machine's kernel settings alone, unless a test or the bench asks.
                "SNAPTASTIC_EXPEDITE_FREEZE": "0",
                "SNAPTASTIC_METRICS_DIR": "",  # no metrics files, unless a test asks for them
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
            }
        )
        if self.config is not None:
            env["SNAPTASTIC_CONFIG"] = str(self.config)
        return env

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run the agent's CLI against the lab."""
        argv = ["snaptastic", *args]
        if shutil.which("snaptastic", path=self.env.get("PATH")) is None:
            import sys

            argv = [sys.executable, "-m", "snaptastic_boot", *args]
        return subprocess.run(
            argv,
            env=kw.pop("env", self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )

    # Instances

    def _launch(self, userdata: bytes | None) -> InstanceIdentity:
        kwargs: dict[str, Any] = {}
        if userdata is not None:
            kwargs["UserData"] = userdata
        reservation = self._internal.run_instances(
            ImageId=IMAGE_ID,
            MinCount=1,
            MaxCount=1,
            InstanceType=INSTANCE_TYPE,
            Placement={"AvailabilityZone": self.availability_zone},
            **kwargs,
        )
        instance = reservation["Instances"][0]
        self.instance_id = instance["InstanceId"]
        root = next(
            (m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if m["DeviceName"] == ROOT_DEVICE),
            None,
        )
        self._emulator.switch_instance(self.instance_id, root)
        return InstanceIdentity(
            instance_id=self.instance_id,
            region=self.region,
            availability_zone=self.availability_zone,
            instance_type=INSTANCE_TYPE,
            image_id=IMAGE_ID,
            account_id=self.account_id,
            private_ip=instance.get("PrivateIpAddress") or "10.0.0.10",
            userdata=userdata,
        )

    def add_neighbour(self) -> Neighbour:
        """Launch another instance of the same template in the same zone that runs beside the current one (a
        cluster member booting at the same time): its own instance id, metadata service, dev and sys roots,
        fstab and run directory, sharing the lab's EC2. The current instance stays current."""
        reservation = self._internal.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1, InstanceType=INSTANCE_TYPE,
                                                   Placement={"AvailabilityZone": self.availability_zone})
        instance = reservation["Instances"][0]
        instance_id = instance["InstanceId"]
        root = next((m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if m["DeviceName"] == ROOT_DEVICE), None)
        base = self.workdir / "neighbours" / instance_id
        for sub in ("dev", "sys", "run"):
            (base / sub).mkdir(parents=True)
        (base / "fstab").write_text(self.fstab.read_text())
        self._emulator.add_neighbour(instance_id, root, base / "dev", base / "sys")
        identity = InstanceIdentity(instance_id=instance_id, region=self.region, availability_zone=self.availability_zone,
                                    instance_type=INSTANCE_TYPE, image_id=IMAGE_ID, account_id=self.account_id,
                                    private_ip=instance.get("PrivateIpAddress") or "10.0.0.11",
                                    userdata=self.imds.identity.userdata)
        imds = MetadataService(identity, self.faults)
        imds.start()
        self._neighbour_imds.append(imds)
        env = {**self.env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint, "SNAPTASTIC_DEV_ROOT": str(base / "dev"),
               "SNAPTASTIC_SYS_ROOT": str(base / "sys"), "SNAPTASTIC_FSTAB": str(base / "fstab"),
               "SNAPTASTIC_RUN_DIR": str(base / "run")}
        return Neighbour(instance_id, env)

    def new_instance(self, userdata: Userdata | object = SAME_USERDATA, region: str | None = None) -> str:
        """Launch a replacement instance in the same zone and make it the one IMDS and the dev root belong to.

        Without `userdata` it gets the current instance's userdata, as a replacement launched from the same
        template would. The previous instance's devices leave the dev root (lazily unmounted if still mounted);
        its volumes stay attached to it in the API until it is terminated or they are detached.
        With `region`, the instance is launched in that region's zone `a` instead (its own moto backend, as
        EC2's regions are apart): the metadata service and `lab.ec2` say that region from then on.
        """
        data = self.imds.identity.userdata if userdata is SAME_USERDATA else userdata_bytes(userdata)  # type: ignore[arg-type]
        if region is not None and region != self.region:
            self.region, self.availability_zone = region, region + "a"
            self._internal = self._client(internal=True)
            self._ec2 = self._client()
        self.imds.identity = self._launch(data)
        return self.instance_id

    def run_as_machine(self, table: Any) -> None:
        """The current instance is a virtual machine: its volumes attach through `table` (a qemu.HotplugTable)
        instead of appearing under the dev root."""
        with self._emulator.lock:
            self._emulator.machines[self.instance_id] = table
            self._emulator.tables.pop(self.instance_id, None)

    def terminate_instance(self) -> None:
        """Terminate the current instance: its devices go away and DeleteOnTermination volumes are deleted."""
        self._internal.terminate_instances(InstanceIds=[self.instance_id])

    def set_userdata(self, userdata: Userdata) -> None:
        self.imds.identity.userdata = userdata_bytes(userdata)

    # Interruption notices and Auto Scaling

    def spot_notice(self, action: str = "terminate", time: str | None = None) -> dict[str, str]:
        """EC2 gives the current instance a Spot interruption notice (two minutes ahead, unless `time`)."""
        from datetime import datetime, timedelta, timezone

        when = time or (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.imds.identity.spot_action = {"action": action, "time": when}
        return self.imds.identity.spot_action

    def rebalance_notice(self) -> dict[str, str]:
        """EC2 recommends rebalancing the current instance (its Spot capacity is at elevated risk)."""
        from datetime import datetime, timezone

        self.imds.identity.rebalance = {"noticeTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return self.imds.identity.rebalance

    def clear_notices(self) -> None:
        ident = self.imds.identity
        ident.spot_action = ident.rebalance = None

    def join_auto_scaling_group(self, group: str = "lab-group", hook: str | None = "snaptastic-terminate",
                                heartbeat: int = 300) -> str:
        """Put the current instance in a new Auto Scaling group (moto), with a termination lifecycle hook."""
        client = self._client(internal=True, service="autoscaling")
        client.create_launch_configuration(LaunchConfigurationName=group, ImageId=IMAGE_ID, InstanceType=INSTANCE_TYPE)
        client.create_auto_scaling_group(AutoScalingGroupName=group, LaunchConfigurationName=group, MinSize=0,
                                         MaxSize=10, DesiredCapacity=0, AvailabilityZones=[self.availability_zone])
        client.attach_instances(AutoScalingGroupName=group, InstanceIds=[self.instance_id])
        if hook:
            client.put_lifecycle_hook(AutoScalingGroupName=group, LifecycleHookName=hook, HeartbeatTimeout=heartbeat,
                                      LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", DefaultResult="ABANDON")
        self.imds.identity.lifecycle_state = "InService"
        return group

    def set_lifecycle_state(self, state: str) -> None:
        """The target lifecycle state the metadata service shows; `Terminated` also starts the group's
        termination of the instance (it waits on the termination hooks, as in Auto Scaling)."""
        self.imds.identity.lifecycle_state = state
        if state == "Terminated":
            self._autoscaling.start_termination(self.instance_id)

    @property
    def autoscaling(self) -> Any:
        """A boto3 Auto Scaling client on the lab (its calls are not recorded)."""
        return self._client(internal=True, service="autoscaling")

    @property
    def lifecycle_actions(self) -> list[Any]:
        """The completed lifecycle actions (`CompletedAction`: time, group, hook, instance_id, result)."""
        return list(self._autoscaling.completed)

    @property
    def autoscaling_calls(self) -> list[tuple[float, str]]:
        """(time, action) of every Auto Scaling call made through the lab's endpoint, except the lab's own."""
        return list(self._autoscaling.calls)

    # Observation

    @property
    def calls(self) -> list[tuple[float, str]]:
        """(time, action) of every EC2 call made through the lab's endpoint, except the lab's own."""
        return self._emulator.calls  # type: ignore[no-any-return]

    @property
    def served(self) -> list[tuple[str, float, float]]:
        """(action, arrived, answered) of every recorded call, time.time() stamps: how long the lab served it."""
        return self._emulator.served  # type: ignore[no-any-return]

    @property
    def requests(self) -> list[tuple[float, str, dict[str, str]]]:
        """(time, action, form parameters) of every recorded call."""
        return self._emulator.requests  # type: ignore[no-any-return]

    def call_counts(self) -> Counter[str]:
        return Counter(action for _, action in self.calls)

    def throttle(self, scale: float) -> Any:
        """Throttle like EC2 from now on: full token buckets of the published sizes times `scale`; returns them
        (their `accepted`/`refused` counts per category and `lower_bound()` say what a storm cost)."""
        from snaptastic_lab.throttle import TokenBuckets

        self.faults.token_buckets = scale
        self._emulator._buckets = TokenBuckets(scale)
        return self._emulator._buckets

    def reset_calls(self) -> None:
        self._emulator.calls.clear()
        self._emulator.requests.clear()
        self._emulator.served.clear()

    def volume_file(self, volume_id: str) -> Path:
        return self._emulator.volume_file(volume_id)  # type: ignore[no-any-return]

    def snapshot_file(self, snapshot_id: str) -> Path:
        return self._emulator.snapshot_file(snapshot_id)  # type: ignore[no-any-return]

    def fail_snapshot(self, snapshot_id: str, after: float = 0.0) -> None:
        """Make a snapshot end in state `error`, at once or after `after` seconds of `pending`."""
        self._emulator.fail_snapshot(snapshot_id, after)

    def device_for(self, volume_id: str) -> Path | None:
        """The node the current instance sees for `volume_id`, or None when it has not appeared."""
        return self._emulator.device_for(volume_id)  # type: ignore[no-any-return]

    @property
    def backend(self) -> Any:
        """moto's EC2 backend of the lab's region, for state the API cannot set."""
        return self._emulator.backend


_backend_lock = threading.Lock()
_boto_session: Any = None


def _session() -> Any:
    """One boto3 session for every lab client: it loads the EC2 service model once, not per lab."""
    global _boto_session
    import boto3

    with _backend_lock:
        if _boto_session is None:
            _boto_session = boto3.session.Session()
        return _boto_session


_accounts_in_use: set[str] = set()


def _claim_account() -> str:
    """The lowest free account id from 123456789012 up: one moto account per running lab."""
    with _backend_lock:
        number = int(ACCOUNT_ID)
        while str(number) in _accounts_in_use:
            number += 1
        _accounts_in_use.add(str(number))
        return str(number)


def _release_account(account_id: str) -> None:
    with _backend_lock:
        _accounts_in_use.discard(account_id)


def _fresh_autoscaling_backend(account_id: str, region: str) -> Any:
    """moto's Auto Scaling backend for `region`, emptied (it shares the account's EC2 backend)."""
    with _backend_lock:
        from moto.autoscaling.models import autoscaling_backends

        backend = autoscaling_backends[account_id][region]
        backend.reset()
        return backend


def _fresh_backend(account_id: str, region: str) -> Any:
    """moto's EC2 backend for `region`, emptied, without moto's default AMIs (they take seconds to load)."""
    with _backend_lock:
        previous = os.environ.get("MOTO_EC2_LOAD_DEFAULT_AMIS")
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
        try:
            from moto.ec2.models import ec2_backends
            from moto.ec2.models.amis import Ami

            backend = ec2_backends[account_id][region]
            backend.reset()
        finally:
            if previous is None:
                del os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"]
            else:
                os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = previous
        backend.amis[IMAGE_ID] = Ami(
            backend,
            IMAGE_ID,
            name="ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-lab",
            architecture="x86_64",
            root_device_name=ROOT_DEVICE,
            root_device_type="ebs",
            virtualization_type="hvm",
            owner_id="099720109477",
        )
        return backend
