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

    latency: float
    throttle_rate: float
    error_rate: float
    fail_actions: dict[str, tuple[int, str, str]]
    hang_actions: dict[str, float]
    volume_creating_seconds: float
    attach_stuck: float
    detach_seconds: float
    snapshot_pending_seconds: float
    device_never_appears: bool
    imds_mode: str
    imds_fail_for: float
    imds_latency: float
    imds_down: bool

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
