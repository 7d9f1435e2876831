"""Which notices the metadata service shows, which are new, and what a watch does about them."""

from __future__ import annotations

import json

import pytest

from snaptastic_boot.plan import notices
from snaptastic_boot.plan.notices import History, respond

INSTANCE = "i-0abc"


def spot(action: str = "terminate", time: str = "2026-11-29T01:00:00Z") -> bytes:
    return json.dumps({"action": action, "time": time}).encode()


def seen(spot_body: bytes | None = None, rebalance: bytes | None = None, lifecycle: bytes | None = None) -> tuple[notices.Notice, ...]:
    return notices.read_notices(INSTANCE, {notices.SPOT_PATH: spot_body, notices.REBALANCE_PATH: rebalance,
                                    notices.LIFECYCLE_PATH: lifecycle})


def test_nothing_shown_is_no_notice() -> None:
    assert seen() == ()
    assert respond(seen(), History(), rebalance=True, lifecycle_hook=True) is None


@pytest.mark.parametrize("action, terminates", [("terminate", True), ("stop", False), ("hibernate", False)])
def test_a_spot_notice_snapshots_and_only_terminate_releases(action: str, terminates: bool) -> None:
    response = respond(seen(spot(action)), History(), rebalance=True, lifecycle_hook=True)
    assert response is not None and response.snapshot
    assert response.release is terminates and not response.complete_lifecycle
    assert f"Spot interruption notice ({action}) at 2026-11-29T01:00:00Z" in response.describe()


def test_the_same_notice_is_handled_once_and_a_new_time_is_a_new_notice() -> None:
    first = respond(seen(spot("stop")), History(), rebalance=True, lifecycle_hook=False)
    assert first is not None
    history = History().after(first)
    assert respond(seen(spot("stop")), history, rebalance=True, lifecycle_hook=False) is None
    again = respond(seen(spot("stop", "2026-11-30T01:00:00Z")), history, rebalance=True, lifecycle_hook=False)
    assert again is not None and again.snapshot


def test_an_unreadable_spot_notice_still_snapshots_but_keeps_the_volumes() -> None:
    response = respond(seen(b"<html>oops"), History(), rebalance=True, lifecycle_hook=False)
    assert response is not None and response.snapshot and not response.release


def test_lifecycle_terminated_snapshots_releases_and_completes_only_with_a_hook() -> None:
    with_hook = respond(seen(lifecycle=b"Terminated"), History(), rebalance=True, lifecycle_hook=True)
    assert with_hook is not None and (with_hook.snapshot, with_hook.release, with_hook.complete_lifecycle) == (True, True, True)
    without = respond(seen(lifecycle=b"Terminated"), History(), rebalance=True, lifecycle_hook=False)
    assert without is not None and without.snapshot and not without.complete_lifecycle


@pytest.mark.parametrize("state", [b"InService", b"Warmed:Stopped", b"Pending"])
def test_other_lifecycle_states_are_no_notice(state: bytes) -> None:
    assert seen(lifecycle=state) == ()


def test_rebalance_snapshots_by_default_and_is_only_recorded_when_off() -> None:
    body = json.dumps({"noticeTime": "2026-11-29T00:58:00Z"}).encode()
    on = respond(seen(rebalance=body), History(), rebalance=True, lifecycle_hook=True)
    assert on is not None and on.snapshot and not on.release and not on.complete_lifecycle
    off = respond(seen(rebalance=body), History(), rebalance=False, lifecycle_hook=True)
    assert off is not None and not off.snapshot and "rebalance recommendations are off" in off.describe()
    assert respond(seen(rebalance=body), History().after(off), rebalance=False, lifecycle_hook=True) is None


def test_several_new_notices_get_one_snapshot() -> None:
    response = respond(seen(spot(), lifecycle=b"Terminated"), History(), rebalance=True, lifecycle_hook=True)
    assert response is not None and len(response.notices) == 2
    assert response.snapshot and response.release and response.complete_lifecycle


def test_after_the_volumes_were_released_a_lifecycle_notice_only_completes_the_action() -> None:
    first = respond(seen(spot()), History(), rebalance=True, lifecycle_hook=True)
    assert first is not None
    history = History().after(first)
    assert history.released
    later = respond(seen(spot(), lifecycle=b"Terminated"), history, rebalance=True, lifecycle_hook=True)
    assert later is not None and [n.kind for n in later.notices] == [notices.LIFECYCLE]
    assert (later.snapshot, later.release, later.complete_lifecycle) == (False, False, True)


def test_keys_carry_the_instance() -> None:
    (mine,) = notices.read_notices("i-1", {notices.LIFECYCLE_PATH: b"Terminated"})
    (theirs,) = notices.read_notices("i-2", {notices.LIFECYCLE_PATH: b"Terminated"})
    assert mine.key != theirs.key
