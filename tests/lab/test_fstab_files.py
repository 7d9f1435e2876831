"""The fstab a real machine has, through the CLI: every byte that is not the agent's stays as it was."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.lab.agent import configure, ok, our_volumes, volumes

HEAD = b"# /etc/fstab: static file system information.\nUUID=1111 / ext4 errors=remount-ro 0 1\n"


def fstab_bytes(lab: Any) -> bytes:
    return Path(lab.fstab).read_bytes()


def ours(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return [lines[i + 1] for i, line in enumerate(lines) if line.startswith(b"# snaptastic-boot:")]


@pytest.mark.parametrize(
    "odd",
    [b"# caf\xe9, written in Latin-1 long ago\n", b"# page\x0cbreak /dev/sdz /mnt/x ext4 defaults 0 0\n",
     "# unicode\u2028line\u0085separators\n".encode()],
    ids=["latin-1", "form-feed", "unicode-separators"],
)
def test_bytes_the_agent_does_not_own_survive_mount_and_unmount(lab: Any, odd: bytes) -> None:
    configure(lab, volumes(lab, 1))
    Path(lab.fstab).write_bytes(HEAD + odd)
    ok(lab.run("mount-snapshots", "solr"))
    data = fstab_bytes(lab)
    assert data.startswith(HEAD + odd) and len(ours(data)) == 1 and ours(data)[0].startswith(b"UUID=")
    ok(lab.run("mount-snapshots", "solr"))
    assert fstab_bytes(lab) == data
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    assert fstab_bytes(lab) == HEAD + odd


def test_a_crlf_file_keeps_its_line_ends(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    crlf = HEAD.replace(b"\n", b"\r\n")
    Path(lab.fstab).write_bytes(crlf)
    ok(lab.run("mount-snapshots", "solr"))
    data = fstab_bytes(lab)
    assert data.startswith(crlf) and data.endswith(b"0 0\r\n")
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    assert fstab_bytes(lab) == crlf


def test_a_marker_without_its_entry_never_takes_the_next_line(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0").encode()
    Path(lab.fstab).write_bytes(HEAD + b"# snaptastic-boot: managed entry for " + mp + b"\n/swapfile none swap sw 0 0\n")
    ok(lab.run("mount-snapshots", "solr"))
    data = fstab_bytes(lab)
    assert b"/swapfile none swap sw 0 0\n" in data and data.count(b"managed entry for") == 1
    ok(lab.run("unmount-snapshots", "solr", "--yes"))
    assert fstab_bytes(lab) == HEAD + b"/swapfile none swap sw 0 0\n"


def test_a_symlinked_fstab_is_followed_and_stays_a_link(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    real = Path(lab.workdir) / "etc-real"
    real.mkdir()
    (real / "fstab").write_bytes(HEAD)
    os.unlink(lab.fstab)
    os.symlink(real / "fstab", lab.fstab)
    ok(lab.run("mount-snapshots", "solr"))
    assert Path(lab.fstab).is_symlink() and len(ours((real / "fstab").read_bytes())) == 1


@pytest.mark.parametrize("written", ["{mp}/", "{escaped}"], ids=["trailing-slash", "octal-escape"])
def test_a_users_own_line_for_the_mount_point_is_recognised(lab: Any, written: str) -> None:
    configure(lab, volumes(lab, 1))
    mp = str(lab.mount_root / "data0")
    escaped = mp[:-1] + f"\\{ord(mp[-1]):03o}"  # .../data0 as .../data\060
    line = f"/dev/xvdz {written.format(mp=mp, escaped=escaped)} ext4 defaults,nofail 0 0\n".encode()
    Path(lab.fstab).write_bytes(HEAD + line)
    result = ok(lab.run("mount-snapshots", "solr"))
    assert fstab_bytes(lab) == HEAD + line
    assert "that the agent did not write" in result.stderr


def test_an_fstab_that_cannot_be_kept_stops_the_run_before_anything_changes(lab: Any) -> None:
    configure(lab, volumes(lab, 1))
    Path(lab.fstab).write_bytes(HEAD + b"\0garbage\n")
    result = lab.run("mount-snapshots", "solr")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("snaptastic: error:")]
    assert len(errors) == 1 and "NUL byte" in errors[0] and "this is a bug" not in result.stderr
    assert our_volumes(lab) == [] and lab.call_counts()["CreateVolume"] == 0
