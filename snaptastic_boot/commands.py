"""The commands: gather inputs, build a plan, print it or apply it."""

from __future__ import annotations

import argparse

from snaptastic_boot.errors import NotImplementedYet


def _todo(name: str) -> int:
    raise NotImplementedYet(f"'{name}' is not implemented yet")


def test(args: argparse.Namespace) -> int:
    return _todo("test")


def list_volumes(args: argparse.Namespace) -> int:
    return _todo("list-volumes")


def mount_snapshots(args: argparse.Namespace) -> int:
    return _todo("mount-snapshots")


def make_snapshots(args: argparse.Namespace) -> int:
    return _todo("make-snapshots")


def unmount_snapshots(args: argparse.Namespace) -> int:
    return _todo("unmount-snapshots")


def clean(args: argparse.Namespace) -> int:
    return _todo("clean")


def check_backups(args: argparse.Namespace) -> int:
    return _todo("check-backups")
