"""Fault knobs: what the lab does wrong on purpose, changeable while the agent runs.

Every knob defaults to "behave like a healthy region, instantly", so tests that do not ask for trouble
are fast.
Random faults draw from one seeded generator, so a failing run can be repeated.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any, Callable

IMDS_MODES = ("v2", "v2-optional", "v1-only")


class Faults:
    """Knobs read by the EC2 middleware and the IMDS server on every request."""

    # EC2
    latency: float  # seconds added to every EC2 call
    throttle_rate: float  # fraction of calls answered 400 RequestLimitExceeded
    error_rate: float  # fraction of calls answered 503 Unavailable or 500 InternalError
    fail_actions: dict[str, tuple[int, str, str]]  # action -> (HTTP status, error code, message), every time
    hang_actions: dict[str, float]  # action -> seconds a call is held before EC2 sees it (dropped if abandoned)
    token_buckets: float  # > 0: EC2's per-category token buckets, scaled by this factor (0.1: 10 / 0.5 per s)
    volume_creating_seconds: float  # new volumes stay `creating`
    attach_stuck: float  # attachments stay `attaching` (math.inf: for ever); the device appears at the end
    detach_seconds: float  # detaching attachments stay `detaching`; the device leaves at once
    snapshot_pending_seconds: float  # new snapshots stay `pending`, with growing progress
    device_never_appears: bool  # AttachVolume succeeds but no device node is made
    # IMDS
    imds_mode: str  # "v2" (token required), "v2-optional", "v1-only" (no token call, 404)
    imds_fail_for: float  # every IMDS request answers 503 for this many seconds from the moment it is set
    imds_latency: float  # seconds added to every IMDS request
    imds_down: bool  # connection refused while True

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[Any], None]]] = {}
        self.rng = random.Random(seed)
        self.imds_failing_until = 0.0
        self.reset()

    def reset(self) -> None:
        """Back to a healthy region."""
        self.latency = 0.0
        self.throttle_rate = 0.0
        self.error_rate = 0.0
        self.fail_actions = {}
        self.hang_actions = {}
        self.token_buckets = 0.0
        self.volume_creating_seconds = 0.0
        self.attach_stuck = 0.0
        self.detach_seconds = 0.0
        self.snapshot_pending_seconds = 0.0
        self.device_never_appears = False
        self.imds_mode = "v2"
        self.imds_fail_for = 0.0
        self.imds_latency = 0.0
        self.imds_down = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "imds_mode" and value not in IMDS_MODES:
            raise ValueError(f"imds_mode must be one of {IMDS_MODES}, not {value!r}")
        if name == "attach_stuck" and value is True:
            value = math.inf
        object.__setattr__(self, name, value)
        if name == "imds_fail_for":
            # "Fail for N seconds" counts from the moment the knob is set.
            object.__setattr__(self, "imds_failing_until", time.monotonic() + float(value))
        for listener in self.__dict__.get("_listeners", {}).get(name, []):
            listener(value)

    def on_change(self, name: str, listener: Callable[[Any], None]) -> None:
        self._listeners.setdefault(name, []).append(listener)

    def chance(self, rate: float) -> bool:
        """True with probability `rate`, from the seeded generator."""
        if rate <= 0:
            return False
        with self._lock:
            return self.rng.random() < rate

    def pick(self, options: tuple[Any, ...]) -> Any:
        with self._lock:
            return self.rng.choice(options)

    def imds_failing(self) -> bool:
        return time.monotonic() < self.imds_failing_until
