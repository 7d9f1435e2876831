"""An EC2 instance as a systemd-nspawn container booting the image with systemd as PID 1.

The instance's root is an overlay: the cached image layers below (see image.py), the instance's own upper
directory on top, kept across its reboots, so a reboot sees what the previous boot wrote (`/etc/fstab`,
the journal) and a new instance starts from the image as it was baked.

The container shares the host's network, so the lab on 127.0.0.1 is reachable; the lab's device directory is
bind-mounted at /lab/dev (device nodes the lab creates later appear there) and its sysfs tree at /lab/sys.
The only change to the package's units are `Environment=` drop-ins that point the agent at the lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.boot.image import Image, clean_nspawn_leftovers

LAB_DEV = "/lab/dev"
LAB_SYS = "/lab/sys"
UNITS = ("snaptastic-mount.service", "snaptastic-snapshot.service", "snaptastic-periodic.service", "snaptastic-watch.service")
CONTAINER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"}
BOOT_TIMEOUT = 180.0
STOP_TIMEOUT = 180.0


class MachineError(AssertionError):
    pass


@dataclass
class Entry:
    """One journal entry, in journal order."""

    fields: dict[str, Any]

    @property
    def message(self) -> str:
        value = self.fields.get("MESSAGE", "")
        if isinstance(value, list):  # journalctl -o json gives non-UTF-8 messages as byte arrays
            return bytes(value).decode("utf-8", "replace")
        return str(value)

    def get(self, key: str) -> str:
        return str(self.fields.get(key, ""))

    @property
    def identifier(self) -> str:
        return self.get("SYSLOG_IDENTIFIER")

    def __str__(self) -> str:
        return f"{self.identifier or self.get('_COMM')}: {self.message}"


class Journal(list):
    """The entries of one boot, with the lookups the tests need."""

    def of(self, identifier: str) -> list[Entry]:
        return [e for e in self if e.identifier == identifier]

    def lines(self, identifier: str) -> list[str]:
        return [e.message for e in self.of(identifier)]

    def job(self, unit: str, job_type: str = "start", result: str = "done") -> int:
        """Index of PID 1's message that a job of `unit` finished ("Finished ...", "Reached target ...",
        "Stopped ...", "Unmounted ..."), or -1."""
        for i, e in enumerate(self):
            if e.get("UNIT") == unit and e.get("JOB_TYPE") == job_type and e.get("JOB_RESULT") == result and e.get("_PID") == "1":
                return i
        return -1

    def find(self, identifier: str, needle: str) -> int:
        """Index of the first entry of `identifier` whose message contains `needle`, or -1."""
        for i, e in enumerate(self):
            if e.identifier == identifier and needle in e.message:
                return i
        return -1

    def text(self) -> str:
        return "\n".join(str(e) for e in self)


class Instance:
    """One instance (one machine id, one root) and its boots."""

    def __init__(self, image: Image, workdir: Path, lab: Any, name: str) -> None:
        self.image = image
        self.workdir = workdir
        self.lab = lab
        self.name = name
        self.machine_id = uuid.uuid4().hex
        self.root = workdir / "root"
        self.boot_ids: list[str] = []
        self.console = workdir / "console.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid1 = 0
        upper, work = workdir / "upper", workdir / "work"
        for path in (upper, work, self.root):
            path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image.lower},upperdir={upper},workdir={work}", str(self.root)],
            check=True,
            capture_output=True,
        )

    # Files in the root (as cloud-init or an image build would write them)

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        return target

    def read(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()

    def point_units_at_lab(self) -> None:
        """Environment= drop-ins for the package's units: the lab's EC2 and IMDS endpoints and device dirs."""
        env = {
            "AWS_ENDPOINT_URL_EC2": self.lab.endpoint,
            "AWS_ENDPOINT_URL_AUTO_SCALING": self.lab.endpoint,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.lab.imds_endpoint,
            "SNAPTASTIC_DEV_ROOT": LAB_DEV,
            "SNAPTASTIC_SYS_ROOT": LAB_SYS,
        }
        write_environment_dropins(self, env, UNITS)

    # Boots

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def boot(self) -> str:
        """Boot and wait until systemd says the boot is over; returns `systemctl is-system-running`."""
        assert not self.running, "already running"
        argv = [
            "systemd-nspawn", "-D", str(self.root), "-M", self.name, "--register=no", "--keep-unit",
            "--console=pipe", f"--uuid={self.machine_id}", f"--bind={self.lab.dev_root}:{LAB_DEV}",
            f"--bind-ro={self.lab.sys_root}:{LAB_SYS}", "-b",
        ]
        with open(self.console, "ab") as console:
            console.write(f"\n===== boot {len(self.boot_ids) + 1}: {' '.join(argv)}\n".encode())
            console.flush()
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        return self._booted()

    def _booted(self) -> str:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise MachineError(f"systemd-nspawn exited ({self._proc and self._proc.returncode}) during boot:\n{self.console_tail()}")
            pid1 = self._container_init()
            if pid1:
                self._pid1 = pid1
                proc = self.exec("systemctl", "is-system-running", "--wait", timeout=max(1.0, deadline - time.monotonic()))
                state = proc.stdout.strip()
                if state in ("running", "degraded"):
                    boot_id = self.exec("cat", "/proc/sys/kernel/random/boot_id").stdout.strip()
                    self.boot_ids.append(boot_id.replace("-", ""))
                    return state
            time.sleep(0.2)
        raise MachineError(f"{self.name} did not finish booting in {BOOT_TIMEOUT:.0f}s:\n{self.console_tail()}")

    def _container_init(self) -> int:
        """PID (on the host) of the container's PID 1: the child of systemd-nspawn that runs systemd."""
        assert self._proc is not None
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split()
        except OSError:
            return 0
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
        return 0

    def exec(self, *argv: str, timeout: float = 60, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the running container (all its namespaces, its root)."""
        assert self._pid1, "not booted"
        cmd = ["nsenter", "-t", str(self._pid1), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *argv]
        proc = subprocess.run(cmd, env={**CONTAINER_ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise MachineError(f"{' '.join(argv)} failed in {self.name} ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def poweroff(self) -> int:
        """`systemctl poweroff` inside, as a stop of the instance does; waits for the container to exit."""
        self.exec("systemctl", "poweroff", check=True)
        return self.wait_exit()

    def wait_exit(self) -> int:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise MachineError(f"{self.name} did not power off in {STOP_TIMEOUT:.0f}s:\n{self.console_tail()}") from exc
        finally:
            clean_nspawn_leftovers()
        self._pid1 = 0
        return code

    def reboot(self) -> str:
        """`systemctl reboot` inside. systemd-nspawn exits with 133 when its container reboots (the
        systemd-nspawn@.service unit of a host restarts it on that status); so does this, in the same root."""
        self.exec("systemctl", "reboot", check=True)
        code = self.wait_exit()
        if code != 133:
            raise MachineError(f"systemd-nspawn exited with {code} on reboot, not 133:\n{self.console_tail()}")
        return self.boot()

    def kill(self) -> None:
        """Stop the container at once (after a failed test). Killing systemd-nspawn alone would leave the
        container running, with its mounts holding the lab's loop devices: kill its PID 1, which takes every
        process of its PID namespace with it, and let systemd-nspawn exit."""
        if self.running:
            assert self._proc is not None
            pid1 = self._pid1 or self._container_init()
            if pid1:
                try:
                    os.kill(pid1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=30)
        self._pid1 = 0
        clean_nspawn_leftovers()

    def close(self) -> None:
        self.kill()
        subprocess.run(["umount", str(self.root)], check=False, capture_output=True)

    # What happened

    def journal(self, boot: int = -1) -> Journal:
        """The journal of one boot of this instance (default: the latest), read from the root's files."""
        if self.running:
            self.exec("journalctl", "--sync")
        boot_id = self.boot_ids[boot]
        proc = subprocess.run(
            ["journalctl", "-D", str(self.root / "var/log/journal"), "-o", "json", "--no-pager", f"_BOOT_ID={boot_id}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise MachineError(f"journalctl failed: {proc.stderr}")
        return Journal(Entry(json.loads(line)) for line in proc.stdout.splitlines() if line.strip())

    def console_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"


def write_environment_dropins(instance: Any, env: dict[str, str], units: tuple[str, ...]) -> None:
    """`Environment=` drop-ins (`lab.conf`) for `units` in the instance's root: the only change the tests make
    to the package's units. Each assignment is quoted: a value may hold spaces."""
    text = "[Service]\n" + "".join(f'Environment="{key}={value}"\n' for key, value in env.items())
    for unit in units:
        instance.write(f"/etc/systemd/system/{unit}.d/lab.conf", text)


def nspawn_problem() -> str | None:
    """Why the boot tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "boot tests need root: systemd-nspawn, overlay mounts, loop devices"
    missing = [tool for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "journalctl", "dpkg-deb") if not _which(tool)]
    if missing:
        return f"boot tests need {', '.join(missing)} (Debian packages systemd-container, mmdebstrap; scripts/setup installs them)"
    return None


def _which(tool: str) -> bool:
    return any(Path(d, tool).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"))
