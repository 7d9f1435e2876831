from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.system import fstab

BASE = "# /etc/fstab: static file system information.\nUUID=1111 / ext4 errors=remount-ro 0 1\n"
E1 = fstab.Entry("aaaa-bbbb", "/mnt/solr", "ext4", "defaults")
E2 = fstab.Entry("cccc-dddd", "/mnt/logs", "xfs", "noatime,nofail")


def test_line_uses_uuid_nofail_and_device_timeout() -> None:
    assert E1.line() == "UUID=aaaa-bbbb /mnt/solr ext4 defaults,nofail,x-systemd.device-timeout=30s 0 0"
    assert E2.line().split()[3] == "noatime,nofail,x-systemd.device-timeout=30s"


def test_merge_adds_keeps_foreign_lines_and_is_idempotent() -> None:
    once = fstab.merge(BASE, add=[E1, E2])
    assert once.startswith(BASE)
    assert fstab.managed_mount_points(once) == ["/mnt/solr", "/mnt/logs"]
    assert fstab.merge(once, add=[E1, E2]) == once
    replaced = fstab.merge(once, add=[fstab.Entry("eeee", "/mnt/solr", "ext4", "defaults")])
    assert "aaaa-bbbb" not in replaced and "UUID=eeee /mnt/solr" in replaced and replaced.count("/mnt/solr ext4") == 1


def test_merge_removes_only_our_lines() -> None:
    text = fstab.merge(BASE + "/dev/xvdz /mnt/other ext4 defaults 0 0\n", add=[E1])
    out = fstab.merge(text, remove=["/mnt/solr", "/mnt/other"])
    assert out == BASE + "/dev/xvdz /mnt/other ext4 defaults 0 0\n"


def test_foreign_entry_detected() -> None:
    text = BASE + "/dev/xvdf /mnt/solr xfs defaults 0 0\n"
    assert fstab.foreign_entry_for(text, "/mnt/solr") == "/dev/xvdf /mnt/solr xfs defaults 0 0"
    assert fstab.foreign_entry_for(fstab.merge(BASE, add=[E1]), "/mnt/solr") is None


def test_write_atomic_keeps_mode_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    path.write_text(BASE)
    os.chmod(path, 0o640)
    assert fstab.write_atomic(path, fstab.merge(BASE, add=[E1])) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (tmp_path / "fstab.snaptastic.bak").read_text() == BASE
    assert fstab.write_atomic(path, path.read_text()) is False
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_failure_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fstab"
    path.write_text(BASE)

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fstab.os, "fsync", full)
    with pytest.raises(OperationFailed, match="No space left on device; the old file is unchanged"):
        fstab.write_atomic(path, fstab.merge(BASE, add=[E1]))
    assert path.read_text() == BASE
    assert [p.name for p in tmp_path.iterdir()] == ["fstab"]
