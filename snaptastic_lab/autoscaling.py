"""Auto Scaling for the lab: moto's Auto Scaling app on the lab's endpoint, plus what moto lacks.

Requests reach it on the same endpoint as EC2; `Router` sends each to its service by the service name in the
SigV4 credential scope (`Credential=AKID/date/region/autoscaling/aws4_request`), as AWS's endpoints are
separate hosts. moto keeps groups and lifecycle hooks (and tags an attached instance with
`aws:autoscaling:groupName` in the shared EC2 backend) but has no CompleteLifecycleAction; this fills it with
AWS's documented behaviour: a termination puts the instance in `Terminating:Wait` for each termination hook of
its group, and CompleteLifecycleAction (by InstanceId) with CONTINUE or ABANDON ends that wait once; a call
for an instance that is not waiting on that hook is a `ValidationError`. Every call is recorded; the lab's
fault knob `fail_actions` applies here too.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from snaptastic_lab.ec2 import call_moto
from snaptastic_lab.faults import Faults

XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")

StartResponse = Callable[..., Any]
Answer = tuple[str, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class CompletedAction:
    time: float
    group: str
    hook: str
    instance_id: str
    result: str


def _error(status: int, code: str, message: str) -> Answer:
    body = (f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return f"{status} {'Bad Request' if status == 400 else 'Error'}", [("Content-Type", "text/xml")], body.encode()


class AutoScalingEmulator:
    def __init__(self, moto_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], backend: Any,
                 faults: Faults, account_id: str, internal_header: str) -> None:
        self.moto_app = moto_app
        self.backend = backend
        self.faults = faults
        self.account_id = account_id
        self.internal_key = "HTTP_" + internal_header.upper().replace("-", "_")
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str]] = []
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.completed: list[CompletedAction] = []
        # instance id -> (group, hooks it still waits on): the instance is in Terminating:Wait.
        self.waiting: dict[str, tuple[str, set[str]]] = {}

    def group_of(self, instance_id: str) -> str | None:
        for name, group in self.backend.autoscaling_groups.items():
            if any(state.instance.id == instance_id for state in group.instance_states):
                return str(name)
        return None

    def start_termination(self, instance_id: str) -> str | None:
        """The group begins to terminate the instance: it waits on each termination hook; the group's name."""
        group = self.group_of(instance_id)
        if group is None:
            return None
        hooks = {h.name for h in self.backend.describe_lifecycle_hooks(group) if h.lifecycle_transition == TERMINATING}
        with self.lock:
            if hooks:
                self.waiting[instance_id] = (group, hooks)
        return group

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        answer: Answer | None = None
        if environ.get(self.internal_key) != "internal":
            stamp = time.time()
            with self.lock:
                self.calls.append((stamp, action))
                self.requests.append((stamp, action, params))
            if action in self.faults.fail_actions:
                status, code, message = self.faults.fail_actions[action]
                answer = _error(status, code, message)
        if answer is None:
            answer = self._complete(params) if action == "CompleteLifecycleAction" else self._forward(environ, params)
        status, headers, payload = answer
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _complete(self, params: dict[str, str]) -> Answer:
        group, hook = params.get("AutoScalingGroupName", ""), params.get("LifecycleHookName", "")
        result, instance_id = params.get("LifecycleActionResult", ""), params.get("InstanceId", "")
        for name, value in (("AutoScalingGroupName", group), ("LifecycleHookName", hook), ("LifecycleActionResult", result)):
            if not value:
                return _error(400, "ValidationError", f"1 validation error detected: Value null at '{name}' failed to "
                                                      "satisfy constraint: Member must not be null")
        if result not in ("CONTINUE", "ABANDON"):
            return _error(400, "ValidationError", f"Invalid LifecycleActionResult: {result}")
        if not instance_id:
            return _error(400, "ValidationError", "LifecycleActionToken or InstanceId is required")
        if group not in self.backend.autoscaling_groups:
            return _error(400, "ValidationError", f"AutoScalingGroup name not found - {group}")
        if not self.backend.describe_lifecycle_hooks(group, [hook]):
            return _error(400, "ValidationError", f"No Lifecycle Hook found with name {hook} for group {group}")
        with self.lock:
            waiting = self.waiting.get(instance_id)
            if waiting is None or waiting[0] != group or hook not in waiting[1]:
                return _error(400, "ValidationError", f"No active Lifecycle Action found with instance ID {instance_id}")
            waiting[1].discard(hook)
            if not waiting[1]:
                del self.waiting[instance_id]
            self.completed.append(CompletedAction(time.time(), group, hook, instance_id, result))
        body = (f'<CompleteLifecycleActionResponse xmlns="{XMLNS}"><CompleteLifecycleActionResult/>'
                f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                "</CompleteLifecycleActionResponse>")
        return "200 OK", [("Content-Type", "text/xml")], body.encode()

    def _forward(self, environ: dict[str, Any], params: dict[str, str]) -> Answer:
        return call_moto(self.moto_app, environ, params, self.account_id)


class Router:
    """One endpoint for the lab's services: Auto Scaling by its SigV4 scope, everything else to EC2."""

    def __init__(self, ec2: Callable[..., Iterable[bytes]], autoscaling: AutoScalingEmulator) -> None:
        self.ec2 = ec2
        self.autoscaling = autoscaling

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        scope = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is not None and scope.group(1) == "autoscaling":
            return self.autoscaling(environ, start_response)
        return self.ec2(environ, start_response)
