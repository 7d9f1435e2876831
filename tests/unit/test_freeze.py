from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from snaptastic_boot.apply import freeze as freeze_mod
from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.system import kernel


@pytest.fixture(autouse=True)
def no_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freeze_mod, "_start_guard", lambda *_: None)


class Fake:
    def __init__(self, slow: float = 0.0, fail: str | None = None) -> None:
        self.frozen: set[str] = set()
        self.log: list[str] = []
        self.slow = slow
        self.fail = fail
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def freeze(self, mp: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.slow)
        with self.lock:
            self.in_flight -= 1
        if mp == self.fail:
            raise OperationFailed(f"cannot freeze {mp}")
        with self.lock:
            self.frozen.add(mp)
            self.log.append(f"freeze {mp}")

    def thaw(self, mp: str) -> None:
        with self.lock:
            self.frozen.discard(mp)
            self.log.append(f"thaw {mp}")


def test_all_frozen_together_then_all_thawed() -> None:
    fake = Fake(slow=0.2)
    mps = [f"/mnt/{i}" for i in range(8)]
    with freeze_mod.frozen(mps, fake.freeze, fake.thaw, max_seconds=30) as window:
        assert fake.frozen == set(mps)
    assert fake.frozen == set()
    assert fake.most_in_flight == 8  # all freezes in the kernel at once, not one after another
    assert window.max_ms < window.blocked_ms


def test_a_failing_freeze_thaws_the_others() -> None:
    fake = Fake(fail="/mnt/2")
    with pytest.raises(OperationFailed, match="cannot freeze /mnt/2"):
        with freeze_mod.frozen(["/mnt/1", "/mnt/2", "/mnt/3"], fake.freeze, fake.thaw, max_seconds=30):
            raise AssertionError("not reached")
    assert fake.frozen == set()


def test_an_error_inside_thaws() -> None:
    fake = Fake()
    with pytest.raises(RuntimeError):
        with freeze_mod.frozen(["/mnt/1"], fake.freeze, fake.thaw, max_seconds=30):
            raise RuntimeError("the API call failed")
    assert fake.frozen == set()


def test_watchdog_thaws_when_the_bound_passes() -> None:
    fake = Fake()
    with freeze_mod.frozen(["/mnt/1"], fake.freeze, fake.thaw, max_seconds=0.2) as window:
        time.sleep(0.5)
        assert fake.frozen == set() and window.watchdog_fired
    assert fake.log.count("thaw /mnt/1") == 1


def test_thawed_as_soon_as_the_call_is_answered_and_only_once() -> None:
    fake = Fake()
    with freeze_mod.frozen(["/mnt/1", "/mnt/2"], fake.freeze, fake.thaw, max_seconds=30) as window:
        assert fake.frozen == {"/mnt/1", "/mnt/2"}
        window.thaw()
        assert fake.frozen == set()
    assert fake.log.count("thaw /mnt/1") == 1 and fake.log.count("thaw /mnt/2") == 1


@pytest.mark.parametrize("before", ["0", "1"])
def test_expedited_grace_periods_only_while_frozen_and_only_if_they_were_off(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: str) -> None:
    setting = tmp_path / "rcu_expedited"
    setting.write_text(before)
    monkeypatch.setattr(kernel, "RCU_EXPEDITED", setting)
    fake = Fake()
    with freeze_mod.frozen(["/mnt/1", "/mnt/2"], fake.freeze, fake.thaw, max_seconds=30, expedite=True):
        assert setting.read_text().strip() == "1" and fake.frozen == {"/mnt/1", "/mnt/2"}
    assert setting.read_text().strip() == before  # someone else's setting stays theirs
    with freeze_mod.frozen(["/mnt/1"], fake.freeze, fake.thaw, max_seconds=30):
        assert setting.read_text().strip() == before  # not asked for: untouched


def test_a_kernel_without_the_setting_freezes_as_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kernel, "RCU_EXPEDITED", tmp_path / "missing")
    fake = Fake()
    with freeze_mod.frozen(["/mnt/1"], fake.freeze, fake.thaw, max_seconds=30, expedite=True):
        assert fake.frozen == {"/mnt/1"}
    assert fake.frozen == set() and not (tmp_path / "missing").exists()


def test_expedited_grace_periods_are_the_default_and_can_be_turned_off() -> None:
    from snaptastic_boot.tunables import Tunables

    assert Tunables.from_env({}).expedite_freeze
    assert Tunables.from_env({"SNAPTASTIC_EXPEDITE_FREEZE": "1"}).expedite_freeze
    for off in ("0", "no", "false", "NO"):
        assert not Tunables.from_env({"SNAPTASTIC_EXPEDITE_FREEZE": off}).expedite_freeze


def test_nothing_to_freeze_starts_no_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, ...]] = []
    monkeypatch.setattr(freeze_mod, "_start_guard", lambda mps, *_: started.append(tuple(mps)))
    fake = Fake()
    with freeze_mod.frozen([], fake.freeze, fake.thaw, 5.0):
        pass
    assert started == []
    with freeze_mod.frozen(["/mnt/a"], fake.freeze, fake.thaw, 5.0, expedite=False):
        pass
    assert started == [("/mnt/a",)] and fake.log == ["freeze /mnt/a", "thaw /mnt/a"]
