"""An EC2 instance as a qemu virtual machine: a real kernel, udev, systemd, NVMe hot-plug and fstab.

Each instance has its own sparse copy of the cached VM disk (tests/boot/image.py); its files are read and
written through a loop mount while it is off, and through the qemu guest agent while it runs (as a console
would). The VM sees what an EC2 Nitro instance sees, as far as qemu goes:

- SMBIOS says `Amazon EC2`, with a product UUID and serial starting with `ec2`, as cloud-init's ds-identify
  wants to see before it runs the Ec2 datasource;
- the metadata service is at 169.254.169.254:80 and the lab's EC2 endpoint at 169.254.0.100, both forwarded by
  qemu's user-mode network to the lab on 127.0.0.1 (`guestfwd`, one `socat` per connection); `restrict=on`
  keeps every other packet inside qemu;
- AttachVolume hot-plugs a PCIe NVMe controller whose serial is the volume id (snaptastic_lab/qemu.py); qemu
  7.2 names it `QEMU NVMe Ctrl`, which the units accept through SNAPTASTIC_NVME_MODELS, the documented
  setting for NVMe models other than Amazon's;
- a reboot resets the machine in place, so hot-plugged volumes stay attached, as EBS volumes do.

KVM is used where it works (see `accelerator`); on this machine kind /dev/kvm is kvm_pvm, which does not run a
stock kernel, so qemu emulates the CPU (TCG): 60 to 75 s to multi-user.target with cloud-init.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from snaptastic_lab.qemu import HotplugTable, Qmp
from tests.boot.image import VmImage
from tests.boot.machine import CONTAINER_ENV, UNITS, Entry, Journal, MachineError, write_environment_dropins

EC2_ADDRESS = "169.254.0.100"
IMDS_ADDRESS = "169.254.169.254"
QEMU_NVME_MODEL = "QEMU NVMe Ctrl"
ROOT_PORTS = 4
BOOT_TIMEOUT = 600.0
STOP_TIMEOUT = 300.0


def vm_problem() -> str | None:
    """Why the VM boot tests cannot run here, or None."""
    missing = [tool for tool in ("qemu-system-x86_64", "socat", "debugfs") if not shutil.which(tool)]
    if missing:
        return f"VM boot tests need {', '.join(missing)} (Debian packages qemu-system-x86, socat, e2fsprogs; scripts/setup installs them)"
    return None


def accelerator() -> str:
    """KVM where it works, else qemu's emulation (TCG). SNAPTASTIC_VM_ACCEL overrides. KVM provided by kvm_pvm
    (this machine kind is itself a PVM guest) does not run a stock kernel: a guest stops in `internal-error` or
    crawls for an hour, so that counts as not working."""
    chosen = os.environ.get("SNAPTASTIC_VM_ACCEL")
    if chosen:
        return chosen
    if Path("/sys/module/kvm_pvm").exists():
        return "tcg"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return "tcg"
    return "kvm"


def _port(endpoint: str) -> int:
    port = urlsplit(endpoint).port
    assert port, endpoint
    return port


class GuestAgent:
    """Commands in the guest through qemu-guest-agent's virtio serial port; a connection per command, so a
    guest agent restarted by a reboot is simply found again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _call(self, conn: Any, name: str, **arguments: Any) -> Any:
        conn.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        conn.flush()
        while True:
            line = conn.readline()
            if not line:
                raise ConnectionError("the guest agent closed the connection")
            answer = json.loads(line.strip(b"\xff"))
            if "error" in answer:
                raise MachineError(f"guest agent {name}: {answer['error']}")
            if name != "guest-sync" or answer.get("return") == arguments.get("id"):
                return answer.get("return")

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A connection, synchronised (guest-sync drops what an earlier client left unread)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(str(self.path))
            conn = sock.makefile("rwb")
            self._call(conn, "guest-sync", id=int(time.monotonic() * 1000) % 2**31)
            sock.settimeout(30)
            yield conn
        finally:
            sock.close()

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        with self._session() as conn:
            pid = self._call(conn, "guest-exec", path=argv[0], arg=argv[1:], env=[f"{k}={v}" for k, v in env.items()],
                             **{"capture-output": True})["pid"]
            deadline = time.monotonic() + timeout
            while True:
                status = self._call(conn, "guest-exec-status", pid=pid)
                if status["exited"]:
                    break
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
                time.sleep(0.2)
        out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
        return subprocess.CompletedProcess(argv, status.get("exitcode", -status.get("signal", 1)), out, err)

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        """Start a command and do not wait for it (poweroff, reboot: the agent may not live to answer)."""
        with self._session() as conn:
            self._call(conn, "guest-exec", path=argv[0], arg=argv[1:], env=[f"{k}={v}" for k, v in env.items()])


class VmInstance:
    """One instance (one machine id, one disk) and its boots, with the interface of machine.Instance."""

    def __init__(self, image: VmImage, workdir: Path, lab: Any, name: str, forwards: dict[str, int] | None = None) -> None:
        """`forwards`: more guest addresses ("169.254.0.101:80") forwarded to ports on the host's 127.0.0.1."""
        self.image = image
        self.forwards = forwards or {}
        self.workdir = workdir
        self.lab = lab
        self.name = name
        self.machine_id = uuid.uuid4().hex
        self.boot_ids: list[str] = []
        self.console = workdir / "console.log"
        self.disk = workdir / "disk.raw"
        self._mountpoint = workdir / "root"
        self._mounted = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: Qmp | None = None
        self.agent = GuestAgent(workdir / "qga.sock")
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "--sparse=always", str(image.disk), str(self.disk)], check=True, capture_output=True)
        self.write("/etc/machine-id", self.machine_id + "\n", 0o444)

    # Files on the disk

    @property
    def root(self) -> Path:
        """The disk's file system, mounted on the host while the VM is off."""
        if self.running:
            raise MachineError(f"{self.name} is running: its disk is the guest's")
        if not self._mounted:
            self._mountpoint.mkdir(exist_ok=True)
            subprocess.run(["mount", "-o", "loop", str(self.disk), str(self._mountpoint)], check=True, capture_output=True)
            self._mounted = True
        return self._mountpoint

    def _release_disk(self) -> None:
        if self._mounted:
            subprocess.run(["umount", str(self._mountpoint)], check=True, capture_output=True)
            self._mounted = False

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not os.access(target, os.W_OK):
            target.chmod(0o644)
        target.write_text(text)
        target.chmod(mode)
        return target

    def read(self, path: str) -> str:
        if self.running:
            return self.exec("cat", path, check=True).stdout
        return (self.root / path.lstrip("/")).read_text()

    def point_units_at_lab(self, units: tuple[str, ...] = UNITS) -> None:
        """Environment= drop-ins for the package's units (or others that run the agent): the forwarded EC2
        endpoint, and qemu's NVMe model. The metadata service needs none: it is at its real address."""
        endpoint = f"http://{EC2_ADDRESS}:{_port(self.lab.endpoint)}"
        env = {"AWS_ENDPOINT_URL_EC2": endpoint, "AWS_ENDPOINT_URL_AUTO_SCALING": endpoint,
               "SNAPTASTIC_NVME_MODELS": QEMU_NVME_MODEL}
        write_environment_dropins(self, env, units)

    # Boots

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self) -> list[str]:
        accel = accelerator()
        forward = "socat STDIO TCP:127.0.0.1:{}"
        network = ",".join([
            "user,id=net0,restrict=on,net=169.254.0.0/16,host=169.254.0.2",
            f"guestfwd=tcp:{IMDS_ADDRESS}:80-cmd:{forward.format(_port(self.lab.imds_endpoint))}",
            f"guestfwd=tcp:{EC2_ADDRESS}:{_port(self.lab.endpoint)}-cmd:{forward.format(_port(self.lab.endpoint))}",
            *[f"guestfwd=tcp:{guest}-cmd:{forward.format(port)}" for guest, port in self.forwards.items()],
        ])
        product_uuid = "ec2" + str(uuid.UUID(self.machine_id))[3:]
        argv = [
            "qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-m", "1024", "-smp", "1",
            "-nodefaults", "-display", "none", "-uuid", product_uuid,
            "-chardev", f"file,id=console,path={self.console},append=on", "-serial", "chardev:console",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 systemd.show_status=false",
            "-drive", f"file={self.disk},if=none,id=root,format=raw", "-device", "virtio-blk-pci,drive=root",
            "-netdev", network, "-device", "virtio-net-pci,netdev=net0",
            # As on Nitro: the product serial is the product UUID, both starting with "ec2" (cloud-init's
            # ds-identify requires both to call the platform AWS).
            "-smbios", f"type=1,manufacturer=Amazon EC2,product=t3.micro,serial={product_uuid}",
            "-chardev", f"socket,id=qga,path={self.agent.path},server=on,wait=off",
            "-device", "virtio-serial", "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
        ]
        for port in range(1, ROOT_PORTS + 1):
            argv += ["-device", f"pcie-root-port,id=ebs{port},slot={port},chassis={port}"]
        return argv

    def boot(self) -> str:
        """Start the VM and wait until systemd says the boot is over; returns `systemctl is-system-running`."""
        assert not self.running, "already running"
        self._release_disk()
        for sock in ("qmp.sock", "qga.sock"):
            (self.workdir / sock).unlink(missing_ok=True)
        argv = self._argv()
        with open(self.workdir / "qemu.log", "ab") as log:
            log.write(f"\n===== boot {len(self.boot_ids) + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.workdir / "qmp.sock").exists():
            if not self.running or time.monotonic() > deadline:
                raise MachineError(f"qemu did not start:\n{(self.workdir / 'qemu.log').read_text()[-3000:]}")
            time.sleep(0.05)
        self._qmp = Qmp(self.workdir / "qmp.sock")
        self.lab.run_as_machine(HotplugTable(self._qmp, [f"ebs{p}" for p in range(1, ROOT_PORTS + 1)]))
        return self._booted(previous=None)

    def _booted(self, previous: str | None) -> str:
        """Wait for a boot whose id is not `previous` to finish."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise MachineError(f"qemu exited ({self._proc and self._proc.returncode}) during boot:\n{self.console_tail()}")
            try:
                boot_id = self.exec("cat", "/proc/sys/kernel/random/boot_id", timeout=10).stdout.strip().replace("-", "")
            except (OSError, ConnectionError, subprocess.TimeoutExpired, MachineError):
                time.sleep(1)
                continue
            if not boot_id or boot_id == previous:
                time.sleep(1)
                continue
            state = self.exec("systemctl", "is-system-running", "--wait", timeout=max(1.0, deadline - time.monotonic())).stdout.strip()
            if state in ("running", "degraded"):
                self.boot_ids.append(boot_id)
                return state
            time.sleep(1)
        raise MachineError(f"{self.name} did not finish booting in {BOOT_TIMEOUT:.0f}s:\n{self.console_tail()}")

    def exec(self, *argv: str, timeout: float = 60, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the guest, through the guest agent."""
        assert self.running, "not booted"
        proc = self.agent.run(list(argv), {**CONTAINER_ENV, **(env or {})}, timeout)
        if check and proc.returncode != 0:
            raise MachineError(f"{' '.join(argv)} failed in {self.name} ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def poweroff(self) -> int:
        """`systemctl poweroff` inside, as a stop of the instance does; waits for qemu to exit."""
        self.agent.start(["systemctl", "poweroff"], CONTAINER_ENV)
        return self.wait_exit()

    def wait_exit(self) -> int:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise MachineError(f"{self.name} did not power off in {STOP_TIMEOUT:.0f}s:\n{self.console_tail()}") from exc
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        return code

    def reboot(self) -> str:
        """`systemctl reboot` inside: the machine resets in place and boots again, its volumes still attached."""
        previous = self.boot_ids[-1]
        self.agent.start(["systemctl", "reboot"], CONTAINER_ENV)
        return self._booted(previous=previous)

    def kill(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.kill()
            self._proc.wait(timeout=30)
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def close(self) -> None:
        self.kill()
        try:
            self._release_disk()
        except subprocess.CalledProcessError:
            pass
        self.disk.unlink(missing_ok=True)

    # What happened

    def journal(self, boot: int = -1) -> Journal:
        """The journal of one boot (default: the latest): from the guest while it runs, from the disk after."""
        boot_id = self.boot_ids[boot]
        if self.running:
            self.exec("journalctl", "--sync")
            proc = self.exec("journalctl", "-o", "json", "--no-pager", f"_BOOT_ID={boot_id}", timeout=120)
        else:
            proc = subprocess.run(
                ["journalctl", "-D", str(self.root / "var/log/journal"), "-o", "json", "--no-pager", f"_BOOT_ID={boot_id}"],
                capture_output=True, text=True, check=False, timeout=60,
            )
        if proc.returncode != 0:
            raise MachineError(f"journalctl failed: {proc.stderr}")
        return Journal(Entry(json.loads(line)) for line in proc.stdout.splitlines() if line.strip())

    def console_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"
