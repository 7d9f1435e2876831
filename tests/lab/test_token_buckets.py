"""The lab throttles like EC2: a token bucket per category of action, a burst, then the refill rate."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snaptastic_lab.throttle import category


def answered(client: Any, **filters: Any) -> bool:
    try:
        client.describe_volumes(**filters)
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "RequestLimitExceeded"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        return False


def test_a_burst_then_the_refill_rate(lab: Any) -> None:
    client = lab._client(max_attempts=1)  # no retries: every answer counts
    lab.faults.token_buckets = 0.1  # unfiltered Describe*: 5 in the bucket, 1 more per second
    burst = [answered(client) for _ in range(8)]
    assert burst == [True] * 5 + [False] * 3
    # The filtered bucket is another one (10, 2/s): unfiltered calls do not empty it.
    assert all(answered(client, Filters=[{"Name": "status", "Values": ["available"]}]) for _ in range(8))
    time.sleep(2.2)
    assert [answered(client) for _ in range(4)] == [True, True, False, False]


@pytest.mark.parametrize(("action", "params", "expected"), [
    ("CreateVolume", {}, "create"), ("DeleteSnapshot", {}, "create"), ("CreateTags", {}, "tags"),
    ("AttachVolume", {}, "mutating"), ("ModifyInstanceAttribute", {}, "mutating"),
    ("DescribeVolumes", {"VolumeId.1": "vol-1"}, "describe"), ("DescribeSnapshots", {"Filter.1.Name": "tag:x"}, "describe-filtered"),
    ("DescribeVolumes", {"MaxResults": "5"}, "describe-filtered"),
])
def test_actions_fall_into_ec2s_categories(action: str, params: dict[str, str], expected: str) -> None:
    assert category(action, params) == expected
