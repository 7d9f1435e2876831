"""The shipped IAM policy allows every EC2 and Auto Scaling action the agent calls, and nothing broader than it must.

The calls are found by reading the source: every EC2 call lives in snaptastic_boot/system/ec2.py, written as
`self._client.<operation>(` or `self._client.get_paginator("<operation>")`, and the one Auto Scaling call in
snaptastic_boot/system/autoscaling.py, written the same way. botocore's own service models turn the snake_case
names back into action names, so a typo or a new call cannot slip through.
"""

from __future__ import annotations

import fnmatch
import json
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "packaging" / "iam-policy.json"
DOC = ROOT / "README.md"
EC2_MODULE = ROOT / "snaptastic_boot" / "system" / "ec2.py"
AUTOSCALING_MODULE = ROOT / "snaptastic_boot" / "system" / "autoscaling.py"
SERVICES = ("ec2", "autoscaling")

CALL = re.compile(r"self\._client\.([a-z][a-z0-9_]*)\(")
PAGINATOR = re.compile(r"self\._client\.get_paginator\(\s*[\"']([a-z][a-z0-9_]*)[\"']")
NOT_OPERATIONS = {"get_paginator", "get_waiter", "can_paginate", "close"}
CORE_ACTIONS = {"DescribeSnapshots", "CreateVolume", "AttachVolume", "DescribeVolumes"}

needs_ec2_module = pytest.mark.xfail(
    not EC2_MODULE.exists(), reason="snaptastic_boot/system/ec2.py (the EC2 adapter) does not exist yet", strict=True
)


def _operation_names(service: str = "ec2") -> dict[str, str]:
    """snake_case method name -> action name, from botocore's service model of `service`."""
    boto3 = pytest.importorskip("boto3")
    from botocore import xform_name

    model = boto3.client(service, region_name="us-east-1").meta.service_model
    return {xform_name(name): name for name in model.operation_names}


def _policy() -> dict:
    return json.loads(POLICY.read_text())


def _statements() -> list[dict]:
    return _policy()["Statement"]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def scan_actions(service: str = "ec2") -> set[str]:
    """EC2 action names called anywhere in snaptastic_boot/ (Auto Scaling: in its adapter)."""
    operations = _operation_names(service)
    found: set[str] = set()
    unknown: set[str] = set()
    paths = [AUTOSCALING_MODULE] if service == "autoscaling" else \
        [p for p in sorted((ROOT / "snaptastic_boot").rglob("*.py")) if p != AUTOSCALING_MODULE]
    for path in paths:
        text = path.read_text()
        for name in CALL.findall(text) + PAGINATOR.findall(text):
            if name in NOT_OPERATIONS:
                continue
            if name in operations:
                found.add(operations[name])
            else:
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, f"calls that are not {service} operations: {sorted(unknown)}"
    return found


def allowed(action: str, service: str = "ec2") -> bool:
    """Some Allow statement names this action (a policy's conditions are checked by the tests below)."""
    for statement in _statements():
        if statement["Effect"] != "Allow":
            continue
        if any(fnmatch.fnmatchcase(f"{service}:{action}", pattern) for pattern in _as_list(statement["Action"])):
            return True
    return False


@needs_ec2_module
def test_policy_allows_every_ec2_call_of_the_agent():
    actions = scan_actions()
    assert actions >= CORE_ACTIONS, f"the scan found only {sorted(actions)}: has the call style of ec2.py changed?"
    missing = sorted(a for a in actions if not allowed(a))
    assert not missing, f"packaging/iam-policy.json does not allow {missing}"


def test_policy_allows_the_auto_scaling_call_and_only_it():
    actions = scan_actions("autoscaling")
    assert actions == {"CompleteLifecycleAction"}, f"the scan found {sorted(actions)}: has the call style changed?"
    assert allowed("CompleteLifecycleAction", "autoscaling")
    granted = [(a, s) for s in _statements() for a in _as_list(s["Action"]) if a.startswith("autoscaling:")]
    assert [a for a, _ in granted] == ["autoscaling:CompleteLifecycleAction"]
    for _, statement in granted:
        assert _as_list(statement["Resource"]) == ["arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"]


@needs_ec2_module
def test_policy_grants_no_action_the_agent_does_not_call():
    actions = {f"ec2:{a}" for a in scan_actions()} | {f"autoscaling:{a}" for a in scan_actions("autoscaling")}
    granted = {a for s in _statements() for a in _as_list(s["Action"])}
    unused = sorted(granted - actions)
    if unused:
        # Not a failure: the agent may drop a call before the policy follows. Least privilege says remove them.
        warnings.warn(f"packaging/iam-policy.json grants actions the agent does not call: {unused}", stacklevel=1)


def test_policy_names_only_real_actions():
    operations = {service: set(_operation_names(service).values()) for service in SERVICES}
    for statement in _statements():
        for action in _as_list(statement["Action"]):
            service, _, name = action.partition(":")
            assert service in SERVICES and "*" not in action, f"{statement['Sid']}: {action} is not one action"
            assert name in operations[service], f"{statement['Sid']}: {action} is not an {service} action"


def test_policy_shape():
    policy = _policy()
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)), "every statement has its own Sid"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = _as_list(statement["Resource"])
        mutating = [a for a in _as_list(statement["Action"]) if not a.startswith("ec2:Describe")]
        if mutating:
            assert "*" not in resources, f"{statement['Sid']}: {mutating} on every resource"


def test_destructive_actions_need_the_agents_tag():
    """Delete and detach only what the agent created: its volumes and snapshots carry a mount_point tag."""
    for statement in _statements():
        actions = {a.removeprefix("ec2:") for a in _as_list(statement["Action"])}
        if actions & {"DeleteVolume", "DeleteSnapshot", "DetachVolume"}:
            resources = _as_list(statement["Resource"])
            if all(":instance/" in r for r in resources):
                assert "ec2:SourceInstanceARN" in json.dumps(statement.get("Condition", {}))
                continue
            assert statement.get("Condition", {}).get("Null") == {"ec2:ResourceTag/mount_point": "false"}, statement["Sid"]


def test_tags_only_at_creation_or_the_detached_mark():
    """CreateTags could otherwise put a mount_point tag on anything and so make it deletable. On existing
    volumes it may only mark them detached, or retag a reattached one's instance_id, and only where they
    already carry a mount_point."""
    from snaptastic_boot.tags import DETACHED, INSTANCE_ID

    for statement in _statements():
        if "ec2:CreateTags" not in _as_list(statement["Action"]):
            continue
        condition = statement["Condition"]
        if "StringEquals" in condition:
            assert set(condition["StringEquals"]["ec2:CreateAction"]) <= {"CreateVolume", "CreateSnapshot", "CreateSnapshots",
                                                                          "CopySnapshot"}
        else:
            assert condition["ForAllValues:StringEquals"] in ({"aws:TagKeys": [DETACHED]}, {"aws:TagKeys": [INSTANCE_ID]}), statement["Sid"]
            assert condition["Null"] == {"ec2:ResourceTag/mount_point": "false", "aws:TagKeys": "false"}
            assert _as_list(statement["Resource"]) == ["arn:aws:ec2:*:*:volume/*"]


def test_every_statement_is_explained_in_the_docs():
    text = DOC.read_text()
    for statement in _statements():
        assert f"`{statement['Sid']}`" in text, f"the README does not explain {statement['Sid']}"


def test_copies_only_of_tagged_snapshots_and_only_tagged_copies():
    """CopySnapshot names two resources: the copy being made (no id yet: `snapshot/${*}`, IAM's literal `*`)
    and its source (`snapshot/snap-*`). A request-tag grant on every snapshot would let any source through."""
    copy = [s for s in _statements() if "ec2:CopySnapshot" in _as_list(s["Action"])]
    by_resource = {r: s["Condition"] for s in copy for r in _as_list(s["Resource"])}
    assert set(by_resource) == {"arn:aws:ec2:*::snapshot/${*}", "arn:aws:ec2:*::snapshot/snap-*"}
    assert by_resource["arn:aws:ec2:*::snapshot/${*}"] == {
        "Null": {"aws:RequestTag/mount_point": "false", "aws:RequestTag/source_snapshot_id": "false"}}
    assert by_resource["arn:aws:ec2:*::snapshot/snap-*"] == {"Null": {"ec2:ResourceTag/mount_point": "false"}}
