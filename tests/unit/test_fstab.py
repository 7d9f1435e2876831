"""fstab as bytes: the agent's pairs in, the agent's pairs out, every other byte in place."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snaptastic_boot.errors import OperationFailed
from snaptastic_boot.system import fstab

BASE = b"# /etc/fstab: static file system information.\nUUID=1111 / ext4 errors=remount-ro 0 1\n"
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
    assert b"aaaa-bbbb" not in replaced and b"UUID=eeee /mnt/solr" in replaced and replaced.count(b"/mnt/solr ext4") == 1


def test_merge_removes_only_our_lines() -> None:
    text = fstab.merge(BASE + b"/dev/xvdz /mnt/other ext4 defaults 0 0\n", add=[E1])
    assert fstab.merge(text, remove=["/mnt/solr", "/mnt/other"]) == BASE + b"/dev/xvdz /mnt/other ext4 defaults 0 0\n"


@pytest.mark.parametrize("odd", [b"# caf\xe9 (Latin-1)\n", b"# a form\x0cfeed /dev/sdz /mnt/x ext4\n",
                                 "# a line\u2028separator\u0085 and \x1c\x1d\x1e\n".encode(), b"# no newline at the end"])
def test_bytes_that_are_not_ours_stay_as_they_were(odd: bytes) -> None:
    data = BASE + odd
    merged = fstab.merge(data, add=[E1])
    assert merged.startswith(data) and fstab.merge(merged, remove=["/mnt/solr"]).rstrip(b"\n") == data.rstrip(b"\n")
    assert fstab.foreign_entry_for(data, "/mnt/x") is None  # a comment stays a comment


def test_a_crlf_file_keeps_its_line_ends_and_ours_follow_them() -> None:
    data = BASE.replace(b"\n", b"\r\n")
    merged = fstab.merge(data, add=[E1])
    assert merged.startswith(data) and merged.endswith(b" 0 0\r\n") and b"\r\n" in merged[len(data):]
    assert fstab.merge(merged, remove=["/mnt/solr"]) == data


def test_a_marker_without_its_entry_goes_alone_and_the_next_line_stays() -> None:
    data = BASE + fstab.MARKER.encode() + b"/mnt/solr\n/swapfile none swap sw 0 0\n"
    assert fstab.merge(data, remove=["/mnt/solr"]) == BASE + b"/swapfile none swap sw 0 0\n"
    assert b"/swapfile none swap sw 0 0\n" in fstab.merge(data, add=[E1])


@pytest.mark.parametrize("written", [b"/mnt/solr/", b"/mnt//solr", b"/mnt/\\163olr", b"/mnt/sol\\162"])
def test_a_users_line_for_the_same_mount_point_is_recognised_however_written(written: bytes) -> None:
    data = BASE + b"/dev/xvdf " + written + b" xfs defaults 0 0\n"
    assert fstab.foreign_entry_for(data, "/mnt/solr") is not None
    assert fstab.mount_point_of(b"/mnt/my\\040data") == "/mnt/my data"


def test_foreign_entry_is_not_our_own() -> None:
    assert fstab.foreign_entry_for(fstab.merge(BASE, add=[E1]), "/mnt/solr") is None


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(user=lines, crlf=st.booleans(), ends=st.booleans())
def test_every_user_byte_survives_a_merge_round_trip(user: list[bytes], crlf: bool, ends: bool) -> None:
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(user) + (sep if ends and user else b"")
    merged = fstab.merge(data, add=[E1, E2])
    assert merged.startswith(data.rstrip(b"\r\n") if not data.endswith(b"\n") else data)
    back = fstab.merge(merged, remove=["/mnt/solr", "/mnt/logs"])
    # Only a line end added before our first line when the file had none may differ.
    assert back == data or (not data.endswith(b"\n") and back in (data + b"\n", data + b"\r\n"))


def test_write_atomic_keeps_mode_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    path.write_bytes(BASE)
    os.chmod(path, 0o640)
    assert fstab.write_atomic(path, fstab.merge(BASE, add=[E1])) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (tmp_path / "fstab.snaptastic.bak").read_bytes() == BASE
    assert fstab.write_atomic(path, path.read_bytes()) is False
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "fstab"
    target.write_bytes(BASE)
    link = tmp_path / "fstab"
    link.symlink_to(target)
    assert fstab.write_atomic(link, fstab.merge(fstab.read(link), add=[E1]))
    assert link.is_symlink() and b"/mnt/solr" in target.read_bytes()
    assert (tmp_path / "real" / "fstab.snaptastic.bak").read_bytes() == BASE


def test_write_failure_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fstab"
    path.write_bytes(BASE)

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fstab.os, "fsync", full)
    with pytest.raises(OperationFailed, match="No space left on device; the old file is unchanged"):
        fstab.write_atomic(path, fstab.merge(BASE, add=[E1]))
    assert path.read_bytes() == BASE
    assert [p.name for p in tmp_path.iterdir()] == ["fstab"]


def test_a_file_that_cannot_be_kept_byte_for_byte_stops_the_run(tmp_path: Path) -> None:
    fstab.check(tmp_path / "missing")  # none yet is fine
    nul = tmp_path / "nul"
    nul.write_bytes(BASE + b"\0\n")
    with pytest.raises(OperationFailed, match="NUL byte"):
        fstab.check(nul)
    with pytest.raises(OperationFailed, match="not a regular file"):
        fstab.check(tmp_path)
