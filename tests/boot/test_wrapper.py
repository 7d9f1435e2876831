"""The unit wrapper's failure paths, with a fake snaptastic and a fake systemctl (no root, no systemd).

The same paths run under a real systemd in test_cycles.py; these pin each decision down in milliseconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

WRAPPER = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "snaptastic-units"
GOOD = '{"snapshotters": {"solr": {"volumes": [{"device": "/dev/sdf", "mount_point": "/mnt/solr", "size": 1}]}}}'


class Wrapper:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.calls = tmp / "calls"
        self.config = tmp / "snaptastic.json"
        self.dropin = tmp / "dropin" / "50-mounts.conf"
        self._script("snaptastic", f'echo "$*" >>{self.calls}\nexit "${{FAKE_RC:-0}}"')
        self._script(
            "systemctl",
            'case "$1" in\n'
            'is-system-running) echo "$FAKE_STATE" ;;\n'
            'is-failed) [ -n "$FAKE_FAILED" ] || exit 1 ;;\n'
            "esac\nexit 0",
        )
        self._script("mountpoint", "exit 0")

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def __call__(self, action: str, defaults: str, state: str = "running", rc: int = 0, failed: bool = False,
                 **env: str) -> tuple[int, list[str], list[str]]:
        (self.tmp / "default").write_text(defaults)
        self.calls.write_text("")
        environ = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "SNAPTASTIC_DEFAULTS": str(self.tmp / "default"),
            "SNAPTASTIC_BIN": str(self.bin / "snaptastic"),
            "SNAPTASTIC_DROPIN_DIR": str(self.dropin.parent),
            "SNAPTASTIC_CONFIG": str(self.config),
            "FAKE_STATE": state,
            "FAKE_RC": str(rc),
            "FAKE_FAILED": "yes" if failed else "",
            **env,
        }
        proc = subprocess.run(["sh", str(WRAPPER), action], env=environ, capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, self.calls.read_text().splitlines(), proc.stderr.splitlines()


@pytest.fixture
def wrapper(tmp_path: Path) -> Wrapper:
    return Wrapper(tmp_path)


SNAPSHOT_ONLY = 'SNAPTASTIC_SNAPSHOT="solr"\n'


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"snapshotters": {"solr": ', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ('{"snapshotters": []}', "not a snaptastic config"),
        ('["solr"]', "not a snaptastic config"),
        (None, "Is a directory"),
    ],
    ids=["truncated", "binary", "snapshotters-list", "not-an-object", "directory"],
)
def test_an_unreadable_config_fails_the_boot_unit_with_one_line(wrapper: Wrapper, content: str | bytes | None, reason: str):
    """Before, the status of `tr` was tested: the wrapper exited 0, wrote no drop-in and logged only Python's message."""
    if content is None:
        wrapper.config.mkdir()
    elif isinstance(content, bytes):
        wrapper.config.write_bytes(content)
    else:
        wrapper.config.write_text(content)
    rc, calls, err = wrapper("mount", SNAPSHOT_ONLY)
    assert rc == 2, err
    assert calls == []
    assert len(err) == 2 and err[0].startswith("snaptastic-units: nothing to mount"), err
    assert err[1].startswith(f"snaptastic-units: cannot read {wrapper.config}: {reason}"), err
    assert "shutdown snapshot of solr cannot be ordered" in err[1]
    assert not wrapper.dropin.exists()


def test_a_named_config_that_is_missing_fails_the_boot_unit(wrapper: Wrapper):
    rc, _, err = wrapper("mount", SNAPSHOT_ONLY)
    assert rc == 2
    assert err[-1].startswith(f"snaptastic-units: cannot read {wrapper.config}: it does not exist"), err


def test_a_config_given_in_the_arguments_is_named(wrapper: Wrapper, tmp_path: Path):
    missing = tmp_path / "elsewhere.json"
    rc, _, err = wrapper("mount", f'{SNAPSHOT_ONLY}SNAPTASTIC_ARGS="--config={missing}"\n', SNAPTASTIC_CONFIG="")
    assert rc == 2
    assert err[-1].startswith(f"snaptastic-units: cannot read {missing}: it does not exist"), err


def test_a_failed_restore_orders_nothing_and_says_what_it_means(wrapper: Wrapper):
    wrapper.config.write_text(GOOD)
    rc, calls, err = wrapper("mount", 'SNAPTASTIC_MOUNT="solr"\nSNAPTASTIC_SNAPSHOT="solr"\n', rc=1)
    assert (rc, calls) == (1, ["mount-snapshots solr"])
    assert err == [
        "snaptastic-units: snaptastic mount-snapshots solr",
        "snaptastic-units: mount-snapshots solr failed with exit code 1; its volumes are not restored: services that "
        "require snaptastic-mount.service stay down, no snapshot is taken at shutdown",
    ]
    assert not wrapper.dropin.exists()


def test_the_drop_in_names_every_mounted_point(wrapper: Wrapper):
    wrapper.config.write_text(GOOD)
    rc, _, err = wrapper("mount", 'SNAPTASTIC_MOUNT="solr"\nSNAPTASTIC_SNAPSHOT="solr"\n')
    assert rc == 0, err
    assert wrapper.dropin.read_text() == "[Unit]\nRequiresMountsFor=/mnt/solr\n"
    assert err[-1] == "snaptastic-units: the shutdown snapshot is ordered before the unmount of /mnt/solr"


def test_no_shutdown_snapshot_after_a_failed_restore(wrapper: Wrapper):
    wrapper.config.write_text(GOOD)
    rc, calls, err = wrapper("snapshot", SNAPSHOT_ONLY, state="stopping", failed=True)
    assert (rc, calls) == (0, [])
    assert len(err) == 1 and "no snapshot taken: snaptastic-mount.service failed at this boot" in err[0], err
    rc, calls, err = wrapper("snapshot", SNAPSHOT_ONLY, state="stopping")
    assert (rc, calls) == (0, ["make-snapshots solr"]), err


EVERYTHING = 'SNAPTASTIC_MOUNT="solr"\nSNAPTASTIC_SNAPSHOT="solr"\nSNAPTASTIC_PERIODIC="solr"\nSNAPTASTIC_CLEAN="solr"\n'


@pytest.mark.parametrize("args", ["", "--loglevel DEBUG", "--config CONFIG -v"])
def test_every_command_line_the_wrapper_runs_parses(wrapper: Wrapper, args: str):
    """`clean snapshots --force solr` was refused by snaptastic's parser (an optional name behind an option);
    the boot tests found it, this keeps every line the wrapper makes parseable."""
    from snaptastic_boot.cli import build_parser

    wrapper.config.write_text(GOOD)
    defaults = f'{EVERYTHING}SNAPTASTIC_ARGS="{args.replace("CONFIG", str(wrapper.config))}"\n'
    lines = []
    for action, state in (("mount", "starting"), ("snapshot", "stopping"), ("periodic", "running")):
        rc, calls, err = wrapper(action, defaults, state=state)
        assert rc == 0, err
        lines += calls
    assert [line.split()[0] for line in lines] == ["mount-snapshots", "make-snapshots", "make-snapshots", "copy-snapshots",
                                                   "clean"]
    for line in lines:
        parsed = build_parser().parse_args(line.split())
        assert parsed.name == "solr", line
