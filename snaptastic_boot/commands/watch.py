"""snaptastic watch: poll the metadata service for Spot and Auto Scaling notices and snapshot at once.

Every `interval` seconds one poll reads the three notice paths with one IMDSv2 token (reused until shortly
before it expires). A new notice (plan/notices.py decides which are new and what to do) is answered in this
order: make-snapshots of every watched snapshotter at once (the make-snapshots code path: lock, thaw of
leftovers, freeze rules, one CreateSnapshots call each); then, for a lifecycle state `Terminated` and a
configured hook, CompleteLifecycleAction (CONTINUE), also when a snapshot failed, so that the termination is
never held longer than the snapshots take; then, for a notice that the instance goes away, the volumes of
snapshotters with `reuse_volumes` are unmounted and detached for the replacement. The handled notices are kept
in the run directory, so the same notice is acted on once, across restarts of the watch too.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from snaptastic_boot import messages, tags
from snaptastic_boot.apply.release import Releaser
from snaptastic_boot.commands import make_snapshots
from snaptastic_boot.commands.context import Adapters, Inputs, Run, build, start
from snaptastic_boot.errors import BadInput, MetadataUnavailable, SnaptasticError
from snaptastic_boot.model import DEFAULT_WATCH_INTERVAL, WATCH_INTERVAL_LIMITS
from snaptastic_boot.plan import notices, unmount
from snaptastic_boot.plan.notices import History, Notice, Response
from snaptastic_boot.system import handled, lock
from snaptastic_boot.system.autoscaling import CONTINUE, AutoScalingApi
from snaptastic_boot.tunables import Tunables

log = logging.getLogger("snaptastic.watch")

# A periodic make-snapshots holding the lock is done within this; the notice's snapshot then follows it.
LOCK_WAIT = 60.0
# While the metadata service fails, one log line per this many seconds, not one per poll.
ERROR_LOG_EVERY = 60.0
GROUP_TAG = "aws:autoscaling:groupName"

AutoScalingFactory = Callable[[str, Tunables], AutoScalingApi]


def _real_autoscaling(region: str, tunables: Tunables) -> AutoScalingApi:
    from snaptastic_boot.system.autoscaling import AutoScaling

    return AutoScaling(region, endpoint=tunables.autoscaling_endpoint, credentials_timeout=tunables.credentials_timeout,
                       credentials_attempts=tunables.credentials_attempts)


def check_interval(seconds: float) -> float:
    low, high = WATCH_INTERVAL_LIMITS
    if not low <= seconds <= high:
        raise BadInput(messages.bad_interval(str(seconds)))
    return seconds


@dataclass
class Watcher:
    """The loop: poll, decide, act, remember. `act` never raises; `wait` returns early when stopped."""

    poll: Callable[[], Sequence[Notice]]
    act: Callable[[Response], None]
    history: History
    save: Callable[[History], None]
    rebalance: bool
    lifecycle_hook: bool
    interval: float
    stop: threading.Event = field(default_factory=threading.Event)
    wait: Callable[[float], object] | None = None
    clock: Callable[[], float] = time.monotonic
    polls: int = 0
    _failing_since: float | None = None
    _failures: int = 0
    _last_error_log: float = 0.0

    def run(self) -> int:
        wait = self.wait or self.stop.wait
        while not self.stop.is_set():
            started = self.clock()
            self.once()
            if self.stop.is_set():
                break
            wait(max(self.interval - (self.clock() - started), 0.0))
        log.info("watch stopped after %d polls", self.polls)
        return 0

    def once(self) -> Response | None:
        self.polls += 1
        try:
            seen = self.poll()
        except MetadataUnavailable as exc:
            self._failed(exc)
            return None
        if self._failing_since is not None:
            log.info("metadata service answers again, after %d failed polls in %.0fs", self._failures,
                     self.clock() - self._failing_since)
            self._failing_since, self._failures = None, 0
        response = notices.respond(seen, self.history, rebalance=self.rebalance, lifecycle_hook=self.lifecycle_hook)
        if response is None:
            return None
        log.warning("%s", response.describe())
        try:
            self.act(response)
        except Exception as exc:  # a bug: logged, the notice still counts as handled, the watch goes on
            log.error("handling the notice failed unexpectedly (this is a bug, please report it): %r", exc, exc_info=True)
        self.history = self.history.after(response)
        self.save(self.history)
        return response

    def _failed(self, exc: MetadataUnavailable) -> None:
        now = self.clock()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._last_error_log = now
            log.warning("%s; polling goes on every %gs", exc, self.interval)
        elif now - self._last_error_log >= ERROR_LOG_EVERY:
            self._last_error_log = now
            log.warning("metadata service still failing (%d polls in %.0fs): %s", self._failures, now - self._failing_since, exc)


@dataclass
class Responder:
    """What a notice sets off, for every watched snapshotter; errors are logged, never raised."""

    runs: Sequence[Run]
    instance_id: str
    lifecycle_hook: str | None = None
    autoscaling: Callable[[], AutoScalingApi] | None = None
    group: str | None = None
    lock_wait: float = LOCK_WAIT

    def __call__(self, response: Response) -> None:
        snapshots_ok = True
        if response.snapshot or response.release:
            try:
                with lock.exclusive(self.runs[0].paths.lock_file, wait=self.lock_wait):
                    if response.snapshot:
                        snapshots_ok = self.snapshot_all()
                    if response.complete_lifecycle:
                        self.complete(snapshots_ok)
                    if response.release:
                        self.release_all()
                return
            except SnaptasticError as exc:
                log.error("no snapshot for the notice: %s", exc)
                snapshots_ok = False
        if response.complete_lifecycle:
            self.complete(snapshots_ok)

    @staticmethod
    def _each(runs: Sequence[Run], what: str, fn: Callable[[Run], Any]) -> bool:
        """`fn` for every snapshotter at once (they are independent); True when none failed."""
        def one(r: Run) -> bool:
            try:
                fn(r)
                return True
            except SnaptasticError as exc:
                log.error("%s: %s failed: %s", r.spec.name, what, exc)
            except Exception as exc:  # a settings-file hook, or a bug: the watch goes on either way
                log.error("%s: %s failed unexpectedly: %r", r.spec.name, what, exc, exc_info=True)
            return False

        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="watch") as pool:
            results = list(pool.map(one, runs))
        return all(results)

    def snapshot_all(self) -> bool:
        def snap(r: Run) -> None:
            report = make_snapshots.take(r, make_snapshots.plan_for(r))
            log.info("%s: snapshots %s (frozen for %.0f ms)", r.spec.name,
                     ", ".join(f"{mp}={sid}" for mp, sid in sorted(report.snapshots.items())), report.freeze_ms)

        return self._each(self.runs, "make-snapshots", snap)

    def release_all(self) -> None:
        reusing = [r for r in self.runs if r.spec.reuse_volumes]
        for r in self.runs:
            if not r.spec.reuse_volumes:
                log.info("%s: volumes stay attached (reuse_volumes is off)", r.spec.name)
        if not reusing:
            return

        def release(r: Run) -> None:
            ours = r.ec2.describe_volumes(filters=tags.volume_filters(r.spec, self.instance_id))
            plan = unmount.plan_unmount(r.spec, self.instance_id, ours, r.devices.mounts(), delete=False)
            Releaser(r.ec2, r.devices, hooks=r.hooks, wait_timeout=r.ctx.tunables.wait_timeout).apply(plan)

        self._each(reusing, "release of the volumes", release)

    def find_group(self) -> str | None:
        if self.group is None:
            try:
                instance = self.runs[0].ec2.describe_instance(self.instance_id)
            except SnaptasticError as exc:
                log.warning("cannot read this instance's Auto Scaling group yet: %s", exc)
                return None
            self.group = tags.tags_of(instance).get(GROUP_TAG)
        return self.group

    def complete(self, snapshots_ok: bool) -> None:
        if not snapshots_ok:
            log.error("a snapshot failed; completing the lifecycle action anyway, so as not to hold the termination")
        group = self.find_group()
        if group is None:
            log.error("%s", messages.no_autoscaling_group(self.instance_id))
            return
        assert self.autoscaling is not None and self.lifecycle_hook is not None
        try:
            self.autoscaling().complete_lifecycle_action(group, self.lifecycle_hook, self.instance_id, CONTINUE)
        except SnaptasticError as exc:
            log.error("lifecycle hook %s of %s: %s", self.lifecycle_hook, group, exc)
            return
        log.info("completed the lifecycle action of hook %s of %s (%s)", self.lifecycle_hook, group, CONTINUE)


def _poller(imds: Any, instance_id: str) -> Callable[[], tuple[Notice, ...]]:
    def poll() -> tuple[Notice, ...]:
        return notices.read_notices(instance_id, {path: imds.poll(path) for path in notices.PATHS})

    return poll


def run(names: Sequence[str], inputs: Inputs, *, lifecycle_hook: str | None = None, rebalance: bool = True,
        interval: float = DEFAULT_WATCH_INTERVAL, tunables: Tunables | None = None, adapters: Adapters | None = None,
        autoscaling: AutoScalingFactory | None = None, stop: threading.Event | None = None,
        wait: Callable[[float], object] | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    check_interval(interval)
    ctx = build(inputs, tunables, adapters)
    runs = [start(ctx, name) for name in dict.fromkeys(names)]
    instance_id = ctx.metadata.instance_id
    responder = Responder(runs, instance_id, lifecycle_hook, lock_wait=LOCK_WAIT)
    if lifecycle_hook:
        # Made now, not at the notice: its credentials are read once, and a missing one stops the start (exit 3).
        client = (autoscaling or _real_autoscaling)(ctx.metadata.region, ctx.tunables)
        responder.autoscaling = lambda: client
        group = responder.find_group()
        if group is None:
            log.warning("%s", messages.no_autoscaling_group(instance_id))
    state = ctx.tunables.paths.watch_state
    keys, released = handled.load(state)
    watcher = Watcher(_poller(ctx.imds, instance_id), responder, History(keys, released),
                      lambda h: handled.save(state, h.handled, h.released), rebalance, bool(lifecycle_hook), interval,
                      stop=stop or threading.Event(), wait=wait, clock=clock)
    log.info("watching for Spot and Auto Scaling notices every %gs for %s (rebalance recommendations: %s; "
             "lifecycle hook: %s)", interval, ", ".join(r.spec.name for r in runs), "snapshot" if rebalance else "ignored",
             f"{lifecycle_hook} of {responder.group}" if lifecycle_hook else "none")
    with _stop_on_signals(watcher.stop):
        return watcher.run()


class _stop_on_signals:
    """SIGTERM, SIGINT and SIGHUP end the loop at its next step (a notice being handled is finished first)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only the flag: logging here could meet the logging lock held by the code it interrupted.
        self.stop.set()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
