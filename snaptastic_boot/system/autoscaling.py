"""Auto Scaling: the one call the agent makes, CompleteLifecycleAction, through botocore directly.

Written as a direct `self._client.<action>(` call, so that the IAM policy check finds it by reading this file.
The endpoint is the standard AWS_ENDPOINT_URL_AUTO_SCALING (read in tunables). A termination is held only
while the call is tried: a few quick retries of throttling and 5xx answers, then the error is the caller's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import botocore.exceptions

from snaptastic_boot import messages
from snaptastic_boot.errors import CredentialsMissing, OperationFailed
from snaptastic_boot.system.ec2 import THROTTLED, UNAVAILABLE, Ec2

log = logging.getLogger("snaptastic.autoscaling")

RETRY_SLEEPS: tuple[float, ...] = (0.5, 1.0, 2.0)
CONTINUE = "CONTINUE"


class AutoScalingApi(Protocol):
    def complete_lifecycle_action(self, group: str, hook: str, instance_id: str, result: str = CONTINUE) -> None: ...


class AutoScaling:
    def __init__(self, region: str, *, endpoint: str | None = None, credentials_timeout: float = 5.0,
                 credentials_attempts: int = 3, client: Any = None, sleeps: Sequence[float] = RETRY_SLEEPS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client if client is not None else Ec2._make_client(
            region, endpoint, credentials_timeout, credentials_attempts, service="autoscaling")
        self._sleeps = tuple(sleeps)
        self._sleep = sleep

    def complete_lifecycle_action(self, group: str, hook: str, instance_id: str, result: str = CONTINUE) -> None:
        action = "CompleteLifecycleAction"
        for attempt in range(len(self._sleeps) + 1):
            try:
                self._client.complete_lifecycle_action(AutoScalingGroupName=group, LifecycleHookName=hook,
                                                       InstanceId=instance_id, LifecycleActionResult=result)
                return
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                code = err.get("Code", "Unknown")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if not (code in THROTTLED or code in UNAVAILABLE or status >= 500) or attempt == len(self._sleeps):
                    raise OperationFailed(messages.autoscaling_failed(action, f"{code}: {err.get('Message', exc)}")) from exc
                why = code
            except (botocore.exceptions.PartialCredentialsError, botocore.exceptions.NoCredentialsError) as exc:
                raise CredentialsMissing(messages.no_credentials_for(action)) from exc
            except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
                if attempt == len(self._sleeps):
                    raise OperationFailed(messages.autoscaling_failed(action, exc)) from exc
                why = type(exc).__name__
            except botocore.exceptions.BotoCoreError as exc:
                raise OperationFailed(messages.autoscaling_failed(action, exc)) from exc
            log.debug("%s: %s; retry %d in %.1fs", action, why, attempt + 1, self._sleeps[attempt])
            self._sleep(self._sleeps[attempt])
