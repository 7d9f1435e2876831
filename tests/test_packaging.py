"""The Debian package: built by packaging/deb/build, installed, used, checked by lintian and systemd, purged.

The fast tests (the unit wrapper's decisions, unit syntax, the man page against the CLI) run anywhere.
The package tests build and `dpkg -i` the package on this machine, so they run only as root; they purge
it at the end. The tools they need are Debian packages (see packaging/deb/build and the README's 'Baking into an AMI'); when
one is missing the test skips, except in CI (CI=true), where a missing tool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEB = ROOT / "packaging" / "deb"
DEBIAN = DEB / "debian"
WRAPPER = DEB / "snaptastic-units"
UNITS = ("snaptastic-mount.service", "snaptastic-snapshot.service", "snaptastic-periodic.service", "snaptastic-periodic.timer",
         "snaptastic-watch.service")
INSTALLED_UNIT_DIR = Path("/lib/systemd/system")
PACKAGE = "snaptastic-boot"
NOT_IMPLEMENTED = 5

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="builds and installs a Debian package: needs root")


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        message = f"needs {', '.join(missing)} (Debian packages, see the README's 'Baking into an AMI')"
        if os.environ.get("CI"):
            pytest.fail(f"CI must install these: {message}")
        pytest.skip(message)


def system_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` without the pyenv or virtualenv on PATH and without PYTHONPATH: the system python3 runs."""
    env = dict(os.environ if env is None else env)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYENV_VERSION"):
        env.pop(key, None)
    keep = [p for p in env.get("PATH", "").split(":") if p and ".pyenv" not in p and "/venv" not in p]
    env["PATH"] = ":".join(keep or ["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return env


def run(*argv: str, **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", system_env())
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=kw.pop("timeout", 600), **kw)


# The unit wrapper: what it runs for each setting of /etc/default/snaptastic.


@pytest.fixture
def wrapper(tmp_path: Path):
    """Run snaptastic-units with a recording fake snaptastic and a fake `systemctl is-system-running`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    fake = bindir / "snaptastic"
    fake.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexit "${{FAKE_RC:-0}}"\n')
    fake.chmod(0o755)
    systemctl = bindir / "systemctl"
    # is-failed: no unit has failed unless FAKE_FAILED is set.
    systemctl.write_text(
        '#!/bin/sh\n[ "$1" = is-system-running ] && echo "$FAKE_STATE"\n[ "$1" = is-failed ] && [ -z "${FAKE_FAILED:-}" ] && exit 1\nexit 0\n'
    )
    systemctl.chmod(0o755)
    mountpoint = bindir / "mountpoint"
    mountpoint.write_text('#!/bin/sh\nfor p in $FAKE_UNMOUNTED; do [ "$p" = "$2" ] && exit 1; done\nexit 0\n')
    mountpoint.chmod(0o755)
    config = tmp_path / "snaptastic.json"
    config.write_text((DEB / "examples" / "snaptastic.json").read_text())

    def call(action: str, defaults: str, state: str = "running", rc: int = 0, unmounted: str = "") -> tuple[int, list[str], str]:
        (tmp_path / "default").write_text(defaults)
        calls.write_text("")
        env = {
            "PATH": f"{bindir}:/usr/bin:/bin",
            "SNAPTASTIC_DEFAULTS": str(tmp_path / "default"),
            "SNAPTASTIC_BIN": str(fake),
            "SNAPTASTIC_DROPIN_DIR": str(tmp_path / "dropin"),
            "SNAPTASTIC_CONFIG": str(config),
            "FAKE_STATE": state,
            "FAKE_RC": str(rc),
            "FAKE_UNMOUNTED": unmounted,
        }
        proc = subprocess.run(["sh", str(WRAPPER), action], env=env, capture_output=True, text=True, timeout=60, check=False)
        return proc.returncode, calls.read_text().splitlines(), proc.stderr

    call.dropin = tmp_path / "dropin" / "50-mounts.conf"  # type: ignore[attr-defined]
    return call


def test_shipped_defaults_do_nothing(wrapper):
    defaults = (DEB / "etc" / "default" / "snaptastic").read_text()
    for action, state in (("mount", "starting"), ("snapshot", "stopping"), ("periodic", "running"), ("watch", "running")):
        rc, calls, err = wrapper(action, defaults, state=state)
        assert (rc, calls) == (0, []), err
        assert "nothing" in err


def test_shipped_config_is_inert_and_the_example_is_valid():
    import json

    from snaptastic_boot.config import settings

    shipped = DEB / "etc" / "snaptastic" / "snaptastic.json"
    assert json.loads(shipped.read_text()) == {"snapshotters": {}}
    assert settings.load_json_config(shipped) == {}
    assert list(settings.load_json_config(DEB / "examples" / "snaptastic.json")) == ["solr"]


def test_mount_runs_each_name_and_orders_the_shutdown_snapshot(wrapper):
    rc, calls, err = wrapper(
        "mount", 'SNAPTASTIC_MOUNT="solr other"\nSNAPTASTIC_SNAPSHOT="solr"\nSNAPTASTIC_ARGS="--loglevel DEBUG"\n'
    )
    assert rc == 0, err
    assert calls == ["mount-snapshots solr --loglevel DEBUG", "mount-snapshots other --loglevel DEBUG"]
    assert wrapper.dropin.read_text() == "[Unit]\nRequiresMountsFor=/mnt/solr\n"


def test_mount_finds_the_config_given_in_the_arguments(wrapper, tmp_path: Path):
    other = tmp_path / "other.json"
    other.write_text('{"snapshotters": {"db": {"volumes": [{"device": "/dev/sdg", "mount_point": "/srv/db", "size": 5}]}}}')
    rc, calls, err = wrapper("mount", f'SNAPTASTIC_MOUNT="db"\nSNAPTASTIC_SNAPSHOT="db"\nSNAPTASTIC_ARGS="--config {other}"\n')
    assert rc == 0, err
    assert calls == [f"mount-snapshots db --config {other}"]
    assert wrapper.dropin.read_text() == "[Unit]\nRequiresMountsFor=/srv/db\n"


def test_mount_failure_fails_the_unit(wrapper):
    rc, calls, err = wrapper("mount", 'SNAPTASTIC_MOUNT="solr"\nSNAPTASTIC_SNAPSHOT="solr"\n', rc=3, unmounted="/mnt/solr")
    assert rc == 3 and calls == ["mount-snapshots solr"]
    assert "failed with exit code 3" in err
    assert not wrapper.dropin.exists(), "the shutdown unit must not require a mount that is not there"


def test_snapshot_only_when_the_system_is_stopping(wrapper):
    defaults = 'SNAPTASTIC_SNAPSHOT="solr"\n'
    for state in ("running", "degraded", "starting", "maintenance"):
        rc, calls, err = wrapper("snapshot", defaults, state=state)
        assert (rc, calls) == (0, []), state
        assert "not shutting down" in err
    rc, calls, err = wrapper("snapshot", defaults, state="stopping")
    assert (rc, calls) == (0, ["make-snapshots solr"]), err


def test_periodic_snapshots_then_cleans_and_tolerates_the_lock(wrapper):
    defaults = 'SNAPTASTIC_PERIODIC="solr"\nSNAPTASTIC_CLEAN="solr"\n'
    rc, calls, err = wrapper("periodic", defaults)
    assert rc == 0, err
    assert calls == ["make-snapshots solr", "copy-snapshots solr", "clean snapshots solr --force"]
    rc, calls, err = wrapper("periodic", defaults, rc=4)
    assert rc == 0 and "holds the lock" in err


def test_watch_runs_one_process_for_every_name_with_the_hook_and_rebalance_setting(wrapper):
    rc, calls, err = wrapper("watch", 'SNAPTASTIC_WATCH="solr logs"\nSNAPTASTIC_LIFECYCLE_HOOK="drain"\n'
                                      'SNAPTASTIC_WATCH_REBALANCE="no"\nSNAPTASTIC_ARGS="-v"\n')
    assert (rc, calls) == (0, ["watch solr logs --lifecycle-hook drain --no-rebalance -v"]), err
    rc, calls, err = wrapper("watch", 'SNAPTASTIC_WATCH="solr"\n')
    assert (rc, calls) == (0, ["watch solr"]), err
    rc, calls, err = wrapper("watch", 'SNAPTASTIC_WATCH="solr"\n', rc=3)
    assert rc == 3  # exec: the unit sees snaptastic's own exit code, and restarts on failure
    rc, calls, err = wrapper("watch", 'SNAPTASTIC_WATCH="solr"\nSNAPTASTIC_WATCH_REBALANCE="maybe"\n')
    assert (rc, calls) == (2, []) and "set it to yes or no" in err


def test_unknown_action_is_a_usage_error(wrapper):
    rc, calls, _ = wrapper("bogus", "")
    assert rc == 2 and calls == []


# Unit files and metadata, without installing.


def test_units_verify(tmp_path: Path):
    """systemd-analyze verify, with ExecStart pointing at the wrapper in this tree (it must exist)."""
    require("systemd-analyze")
    for unit in UNITS:
        text = (DEBIAN / f"{PACKAGE}.{unit}").read_text()
        (tmp_path / unit).write_text(text.replace("/usr/lib/snaptastic-boot/snaptastic-units", str(WRAPPER)))
    proc = run("systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in UNITS))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_shell_scripts_pass_shellcheck():
    require("shellcheck")
    proc = run("shellcheck", "--shell=sh", str(WRAPPER), str(DEB / "build"))
    assert proc.returncode == 0, proc.stdout


def test_unit_settings():
    mount = (DEBIAN / f"{PACKAGE}.snaptastic-mount.service").read_text()
    for line in (
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target",
        "Wants=network-online.target",
        "TimeoutStartSec=",
    ):
        assert line in mount
    snapshot = (DEBIAN / f"{PACKAGE}.snaptastic-snapshot.service").read_text()
    for line in (
        "ExecStart=/bin/true",
        "RemainAfterExit=true",
        "ExecStop=/usr/lib/snaptastic-boot/snaptastic-units snapshot",
        "TimeoutStopSec=",
    ):
        assert line in snapshot
    assert re.search(r"^After=.*network-online\.target.*snaptastic-mount\.service", snapshot, re.M)
    watch = (DEBIAN / f"{PACKAGE}.snaptastic-watch.service").read_text()
    for line in ("ExecStart=/usr/lib/snaptastic-boot/snaptastic-units watch", "Restart=on-failure",
                 "RestartPreventExitStatus=2", "KillMode=mixed", "TimeoutStopSec="):
        assert line in watch


def test_changelog_version_is_the_package_version():
    import snaptastic_boot

    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"{PACKAGE} ({snaptastic_boot.__version__}")


def test_man_page_documents_every_command_and_exit_code():
    from snaptastic_boot import errors
    from snaptastic_boot.cli import build_parser

    page = (DEB / "snaptastic.1").read_text().replace("\\-", "-")
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in sub.choices.items():
        assert name in page, f"snaptastic.1 does not document '{name}'"
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--ignore-mounted", "--verbose"):
                    assert option in page, f"snaptastic.1 does not document '{name} {option}'"
    for code in {v for k, v in vars(errors).items() if k.startswith("EXIT_")}:
        assert f".B {code}\n" in page


# The built package, installed on this machine.


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("dpkg-buildpackage", "dh", "dh_python3")
    out = tmp_path_factory.mktemp("deb")
    proc = run(str(DEB / "build"), str(out), timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    debs = list(out.glob(f"{PACKAGE}_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    proc = run("dpkg", "-i", str(deb), env={**system_env(), "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        fix = run("apt-get", "-f", "install", "-y", "-q", env={**system_env(), "DEBIAN_FRONTEND": "noninteractive"})
        assert fix.returncode == 0, proc.stderr + fix.stderr
    status = run("dpkg-query", "-W", "-f=${Status}", PACKAGE)
    assert status.stdout == "install ok installed", proc.stdout + proc.stderr
    yield deb
    run("dpkg", "--purge", PACKAGE)


@needs_root
def test_package_contents(deb: Path):
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    for path in (
        "./usr/bin/snaptastic",
        "./etc/snaptastic/snaptastic.json",
        "./etc/default/snaptastic",
        "./usr/lib/snaptastic-boot/snaptastic-units",
        "./usr/share/man/man1/snaptastic.1.gz",
        "./usr/share/doc/snaptastic-boot/examples/snaptastic.json",
        "./usr/share/doc/snaptastic-boot/examples/iam-policy.json",
        "./usr/share/snaptastic-boot/schemas",
        *(f"./lib/systemd/system/{u}" for u in UNITS),
    ):
        assert re.search(rf" {re.escape(path)}( |$)", listing, re.M), f"{path} is not in the package"
    for schema in sorted((ROOT / "snaptastic_boot" / "schemas").glob("*.json")):
        assert f"/snaptastic_boot/schemas/{schema.name}" in listing
    for model in sorted((ROOT / "snaptastic_boot" / "system" / "botocore_data").rglob("*.json")):
        assert f"/snaptastic_boot/{model.relative_to(ROOT / 'snaptastic_boot')}" in listing  # the trimmed EC2 model
    assert "snaptastic_lab" not in listing and "/tests/" not in listing and "conftest" not in listing
    control = run("dpkg-deb", "-f", str(deb), "Depends", "Recommends").stdout
    for dep in ("python3-boto3", "python3-jsonschema", "e2fsprogs", "util-linux", "xfsprogs"):
        assert dep in control
    assert "python3-requests" not in control  # the metadata service is read with http.client


@needs_root
def test_lintian_has_no_errors(deb: Path):
    require("lintian")
    proc = run("lintian", "--no-tag-display-limit", str(deb), timeout=600)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, proc.stdout


@needs_root
def test_installed_files(installed: Path):
    files = set(run("dpkg-query", "-L", PACKAGE).stdout.splitlines())
    for path in (
        "/usr/bin/snaptastic",
        "/etc/default/snaptastic",
        "/etc/snaptastic/snaptastic.json",
        *(f"{INSTALLED_UNIT_DIR}/{u}" for u in UNITS),
    ):
        assert path in files and Path(path).exists(), path
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert " /etc/default/snaptastic " in conffiles and " /etc/snaptastic/snaptastic.json " in conffiles
    assert Path("/usr/share/snaptastic-boot/schemas").resolve().is_dir()
    for name in (
        "multi-user.target.wants/snaptastic-mount.service",
        "multi-user.target.wants/snaptastic-snapshot.service",
        "timers.target.wants/snaptastic-periodic.timer",
        "multi-user.target.wants/snaptastic-watch.service",
    ):
        assert (Path("/etc/systemd/system") / name).is_symlink(), f"{name} is not enabled"


@needs_root
def test_installed_command_runs_with_the_system_python(installed: Path, tmp_path: Path):
    from snaptastic_boot import __version__

    shebang = Path("/usr/bin/snaptastic").read_text().splitlines()[0]
    assert shebang.replace(" ", "") == "#!/usr/bin/python3", shebang
    proc = run("/usr/bin/snaptastic", "--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"snaptastic-boot {__version__}"
    where = run("/usr/bin/python3", "-c", "import snaptastic_boot; print(snaptastic_boot.__file__)", cwd=tmp_path)
    assert where.stdout.startswith("/usr/lib/python3/dist-packages/snaptastic_boot/"), where


@needs_root
def test_installed_units_verify(installed: Path):
    require("systemd-analyze")
    proc = run("systemd-analyze", "verify", *(f"{INSTALLED_UNIT_DIR}/{u}" for u in UNITS))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@needs_root
def test_installed_wrapper_does_nothing_until_configured(installed: Path):
    for action in ("mount", "snapshot", "periodic", "watch"):
        proc = run("/usr/lib/snaptastic-boot/snaptastic-units", action)
        assert proc.returncode == 0, proc.stderr
        assert "nothing" in proc.stderr


@needs_root
def test_installed_snaptastic_test_against_the_lab(installed: Path, lab, tmp_path: Path):
    proc = run("/usr/bin/snaptastic", "test", env=system_env(lab.env), cwd=tmp_path, timeout=120)
    if proc.returncode == NOT_IMPLEMENTED:
        pytest.xfail("snaptastic test not implemented yet")
    assert proc.returncode == 0, proc.stderr
    assert lab.instance_id in proc.stdout


@needs_root
def test_purge_removes_everything(installed: Path):
    proc = run("dpkg", "--purge", PACKAGE)
    assert proc.returncode == 0, proc.stderr
    for path in (
        "/usr/bin/snaptastic",
        "/etc/default/snaptastic",
        "/etc/snaptastic",
        "/usr/lib/snaptastic-boot",
        "/usr/share/snaptastic-boot",
        *(f"{INSTALLED_UNIT_DIR}/{u}" for u in UNITS),
    ):
        assert not Path(path).exists(), f"{path} is left after purge"
    for name in ("multi-user.target.wants/snaptastic-mount.service", "timers.target.wants/snaptastic-periodic.timer"):
        assert not (Path("/etc/systemd/system") / name).is_symlink()
    assert (
        run("dpkg-query", "-W", PACKAGE).returncode != 0
        or "not-installed" in run("dpkg-query", "-W", "-f=${Status}", PACKAGE).stdout
    )
