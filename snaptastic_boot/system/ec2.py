"""The EC2 API, and the only module that imports botocore (boto3's core; boto3 itself is not needed).

Each method is one EC2 action (or one paginated action), written as a direct `self._client.<action>(` call so
the IAM policy check can find every action by reading this file. botocore errors become our errors here.
Throttling, 5xx answers and dropped connections are retried with full jitter until one deadline for the whole
run (SNAPTASTIC_API_DEADLINE), not for a count of attempts: in a boot storm an agent keeps its place in line
instead of failing a stateful server's boot, and agents that back off at random do not retry in step.
Other errors fail at once. ClientToken keeps a retried CreateVolume single.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from snaptastic_boot import __version__, messages
from snaptastic_boot.errors import AwsError, CredentialsMissing, OperationFailed
from snaptastic_boot.tags import Tags, tag_list

log = logging.getLogger("snaptastic.ec2")

# Codes EC2 answers when a token bucket is empty, and when it is briefly unable to serve.
THROTTLED = ("RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled")
UNAVAILABLE = ("InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable")
BACKOFF_BASE = 0.25
BACKOFF_CAP = 20.0

# The EC2 actions this module calls, and so the operations of the service model shipped with the agent:
# `botocore_data/ec2/<version>/service-2.json` is botocore's EC2 model cut to these operations and the shapes
# they use, without documentation (about 100 KB instead of 4 MB), so that making a client takes milliseconds
# instead of a third of the agent's start-up. Made by `scripts/trim-ec2-model`; tests/unit/test_ec2_model.py
# checks it against the installed botocore and against the calls below.
ACTIONS = ("AttachVolume", "CopySnapshot", "CreateSnapshot", "CreateSnapshots", "CreateTags", "CreateVolume", "DeleteSnapshot",
           "DeleteVolume", "DescribeImages", "DescribeInstances", "DescribeSnapshots", "DescribeVolumes",
           "DetachVolume", "ModifyInstanceAttribute")
MODEL_DIR = Path(__file__).with_name("botocore_data")


class _Ec2Loader(botocore.loaders.Loader):
    """botocore's loader, reading the shipped model first, and knowing that EC2 is the one service wanted: its
    own check that a service exists lists every service botocore ships (over 400 folders, a stat or two each)."""

    def __init__(self) -> None:
        super().__init__(extra_search_paths=[str(MODEL_DIR)])

    def list_available_services(self, type_name: str) -> list[str]:
        return ["ec2"]


class Ec2:
    def __init__(self, region: str, *, endpoint: str | None = None, credentials_timeout: float = 5.0,
                 credentials_attempts: int = 3, deadline: float, client: Any = None,
                 sleep_for: Callable[[float], float] | None = None) -> None:
        self.region = region
        self.calls: Counter[str] = Counter()
        self.throttled = 0
        self.throttle_wait = 0.0
        self._deadline = time.monotonic() + deadline
        self._jitter = sleep_for or (lambda cap: random.uniform(0, cap))
        self._lock = threading.Lock()
        if client is None:
            client = self._make_client(region, endpoint, credentials_timeout, credentials_attempts)
        self._client = client
        self._client.meta.events.register("before-call.ec2", self._count)
        self._client.meta.events.register("needs-retry.ec2", self._retry_delay)
        self._client.meta.events.register("before-parse.ec2.CreateSnapshots", self._answered)
        self._local = threading.local()

    def _retry_delay(self, response: Any = None, caught_exception: Any = None, attempts: int = 1, **_: Any) -> float | None:
        """botocore asks before each retry: seconds to wait, or None to give up (its own retries are off)."""
        throttled = False
        if response is not None:
            status = response[0].status_code
            code = (response[1] or {}).get("Error", {}).get("Code", "")
            throttled = code in THROTTLED
            if not (throttled or code in UNAVAILABLE or status >= 500):
                return None
        elif not isinstance(caught_exception, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(self._jitter(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempts)), left)
        with self._lock:
            if throttled:
                self.throttled += 1
                self.throttle_wait += delay
        return delay

    @staticmethod
    def _make_client(region: str, endpoint: str | None, credentials_timeout: float, credentials_attempts: int,
                     service: str = "ec2") -> Any:
        config = Config(
            region_name=region,
            # botocore's own retries are off; `_retry_delay` decides, by the run's deadline.
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=64,
            user_agent_extra=f"snaptastic-boot/{__version__}",
        )
        core = botocore.session.get_session()
        if service == "ec2":
            core.register_component("data_loader", _Ec2Loader())
        # The instance-profile credentials come from the same metadata service; botocore's own 1 s and one
        # attempt would fail where the agent's reads of a slow service succeed.
        core.set_config_variable("metadata_service_timeout", credentials_timeout)
        core.set_config_variable("metadata_service_num_attempts", credentials_attempts)
        try:
            credentials = core.get_credentials()
        except botocore.exceptions.PartialCredentialsError as exc:
            raise CredentialsMissing(messages.partial_credentials(str(exc))) from exc
        if credentials is None:
            raise CredentialsMissing(messages.NO_CREDENTIALS)
        # botocore's client directly: boto3 adds nothing the agent uses, and its import costs a tenth of a second.
        return core.create_client(service, region_name=region, endpoint_url=endpoint, config=config)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            raise AwsError(action, err.get("Code", "Unknown"), err.get("Message", str(exc))) from exc
        except botocore.exceptions.PartialCredentialsError as exc:
            raise CredentialsMissing(messages.partial_credentials(str(exc))) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise CredentialsMissing(messages.no_credentials_for(action)) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise OperationFailed(messages.ec2_failed(action, exc)) from exc

    # -- reads ---------------------------------------------------------------------------------------------

    def describe_snapshots(self, filters: list[dict[str, Any]], snapshot_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Our own snapshots only: OwnerIds=self, so a public or shared snapshot can never be restored."""
        kwargs: dict[str, Any] = {"OwnerIds": ["self"], "Filters": filters}
        if snapshot_ids:
            kwargs["SnapshotIds"] = list(snapshot_ids)
        out: list[dict[str, Any]] = []
        with self._translate("DescribeSnapshots"):
            for page in self._client.get_paginator("describe_snapshots").paginate(**kwargs):
                out.extend(page.get("Snapshots", []))
        return out

    def describe_volumes(self, filters: list[dict[str, Any]] | None = None, volume_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if filters:
            kwargs["Filters"] = filters
        if volume_ids:
            kwargs["VolumeIds"] = list(volume_ids)
        out: list[dict[str, Any]] = []
        with self._translate("DescribeVolumes"):
            for page in self._client.get_paginator("describe_volumes").paginate(**kwargs):
                out.extend(page.get("Volumes", []))
        return out

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        with self._translate("DescribeInstances"):
            resp = self._client.describe_instances(InstanceIds=[instance_id])
        for reservation in resp.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        raise OperationFailed(messages.instance_not_found(instance_id))

    def images_using_snapshots(self, snapshot_ids: Sequence[str]) -> dict[str, str]:
        """snapshot id -> AMI id, for snapshots that back one of our AMIs (they cannot be deleted)."""
        if not snapshot_ids:
            return {}
        out: dict[str, str] = {}
        with self._translate("DescribeImages"):
            resp = self._client.describe_images(
                Owners=["self"],
                Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": list(snapshot_ids)}],
            )
        for image in resp.get("Images", []):
            for mapping in image.get("BlockDeviceMappings", []):
                snap = (mapping.get("Ebs") or {}).get("SnapshotId")
                if snap:
                    out[snap] = image["ImageId"]
        return out

    # -- writes --------------------------------------------------------------------------------------------

    def create_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._translate("CreateVolume"):
            return dict(self._client.create_volume(**params))

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> dict[str, Any]:
        with self._translate("AttachVolume"):
            return dict(self._client.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device))

    def detach_volume(self, volume_id: str) -> dict[str, Any]:
        with self._translate("DetachVolume"):
            return dict(self._client.detach_volume(VolumeId=volume_id))

    def delete_volume(self, volume_id: str) -> None:
        with self._translate("DeleteVolume"):
            self._client.delete_volume(VolumeId=volume_id)

    def set_delete_on_termination(self, instance_id: str, devices: dict[str, bool]) -> None:
        """One ModifyInstanceAttribute call for every device."""
        if not devices:
            return
        mappings = [{"DeviceName": d, "Ebs": {"DeleteOnTermination": flag}} for d, flag in sorted(devices.items())]
        with self._translate("ModifyInstanceAttribute"):
            self._client.modify_instance_attribute(InstanceId=instance_id, BlockDeviceMappings=mappings)

    def _answered(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        """botocore has the answer and has not parsed it yet (`before-parse`, botocore 1.31 and later; with an
        older one the caller thaws after the call, as it always does)."""
        hook = getattr(self._local, "answered", None)
        if hook is not None and (response_dict or {}).get("status_code") == 200:
            hook()

    def create_snapshots(
        self, instance_id: str, exclude_volume_ids: Sequence[str], tags: Tags, description: str,
        answered: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Crash-consistent snapshots of several volumes of one instance in one call. `answered` is called as
        soon as EC2 has accepted the call, before its answer is parsed: the snapshots' point in time is set."""
        params: dict[str, Any] = {
            "InstanceSpecification": {
                "InstanceId": instance_id,
                "ExcludeBootVolume": True,
                "ExcludeDataVolumeIds": list(exclude_volume_ids),
            },
            "Description": description,
            "CopyTagsFromSource": "volume",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
        }
        if not exclude_volume_ids:
            del params["InstanceSpecification"]["ExcludeDataVolumeIds"]
        self._local.answered = answered
        try:
            with self._translate("CreateSnapshots"):
                resp = self._client.create_snapshots(**params)
        finally:
            self._local.answered = None
        return list(resp.get("Snapshots", []))

    def create_snapshot(self, volume_id: str, description: str, tags: Tags) -> dict[str, Any]:
        with self._translate("CreateSnapshot"):
            return dict(
                self._client.create_snapshot(
                    VolumeId=volume_id,
                    Description=description,
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
                )
            )

    def copy_snapshot(self, source_region: str, source_snapshot_id: str, description: str, tags: Tags) -> str:
        """Start a copy, into this client's region, of a completed snapshot of another region; the copy's id."""
        with self._translate("CopySnapshot"):
            return str(self._client.copy_snapshot(
                SourceRegion=source_region,
                SourceSnapshotId=source_snapshot_id,
                Description=description,
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )["SnapshotId"])

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._translate("DeleteSnapshot"):
            self._client.delete_snapshot(SnapshotId=snapshot_id)

    def create_tags(self, resource_ids: Sequence[str], tags: Tags) -> None:
        with self._translate("CreateTags"):
            self._client.create_tags(Resources=list(resource_ids), Tags=tag_list(tags))

    def prepare(self, *actions: str) -> None:
        """Resolve these operations' request and response models now, so their first call is not slower."""
        for action in actions:
            model = self._client.meta.service_model.operation_model(action)
            _ = (model.input_shape, model.output_shape)

    def supports_initialization_rate(self) -> bool:
        shape = self._client.meta.service_model.operation_model("CreateVolume").input_shape
        return "VolumeInitializationRate" in shape.members
