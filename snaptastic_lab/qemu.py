"""Volumes attached to a qemu virtual machine as EBS attaches them to a Nitro instance: PCIe NVMe hot-plug.

AttachVolume on an instance that is a VM adds the volume's image file as a block node and plugs an `nvme`
device with the volume id (without the dash) as its serial into a free PCIe root port, through the VM's QMP
socket; the guest's kernel and udev see a new NVMe controller, as on EC2. DetachVolume unplugs it and waits for
the guest to let go (DEVICE_DELETED) before the block node is removed. qemu 7.2 cannot set the model string:
the guest sees `QEMU NVMe Ctrl`, not `Amazon Elastic Block Store`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from snaptastic_lab.devices import Attached, nvme_serial

UNPLUG_TIMEOUT = 60.0  # a guest under emulation can take a while to answer the unplug request


class QmpError(RuntimeError):
    pass


class Qmp:
    """A QMP connection: one command at a time; the events that arrive in between are kept."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._read()  # the greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise QmpError("qemu closed its QMP socket")
        return json.loads(line)

    def command(self, name: str, **arguments: Any) -> Any:
        with self._lock:
            if self._file.closed:
                raise QmpError(f"{name}: the QMP connection is closed (the VM is gone)")
            message: dict[str, Any] = {"execute": name}
            if arguments:
                message["arguments"] = arguments
            self._file.write(json.dumps(message).encode() + b"\n")
            self._file.flush()
            while True:
                answer = self._read()
                if "event" in answer:
                    self.events.append(answer)
                elif "error" in answer:
                    raise QmpError(f"{name}: {answer['error'].get('desc', answer['error'])}")
                else:
                    return answer.get("return")

    def wait_event(self, event: str, device: str, timeout: float) -> None:
        """Wait for `event` about the device with id `device`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for i, seen in enumerate(self.events):
                    if seen.get("event") == event and seen.get("data", {}).get("device") == device:
                        del self.events[i]
                        return
                if time.monotonic() > deadline:
                    raise QmpError(f"no {event} for {device} in {timeout:.0f}s")
                self._sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    self.events.append(self._read())
                except TimeoutError:
                    continue

    def close(self) -> None:
        try:
            self._file.close()
            self._sock.close()
        except OSError:
            pass


class HotplugTable:
    """A VM instance's attached volumes; it answers the lab's EC2 emulator as devices.DeviceTable does."""

    def __init__(self, qmp: Qmp, ports: list[str]) -> None:
        self.qmp = qmp
        self.ports = ports
        self.attached: dict[str, Attached] = {}
        self._port_of: dict[str, str] = {}
        self.loops_created: set[str] = set()

    def add_root(self, volume_id: str) -> None:
        """The VM's root disk is its own virtio disk, plugged at start."""

    def remove_root(self) -> None:
        pass

    def attach(self, volume_id: str, image: Path, requested: str) -> Attached:
        free = [port for port in self.ports if port not in self._port_of.values()]
        if not free:
            raise QmpError(f"no free PCIe root port for {volume_id}: the VM has {len(self.ports)}")
        node = f"ebs-{volume_id}"
        self.qmp.command("blockdev-add", driver="raw", **{"node-name": node}, file={"driver": "file", "filename": str(image)})
        try:
            self.qmp.command("device_add", driver="nvme", id=volume_id, serial=nvme_serial(volume_id).strip(), drive=node, bus=free[0])
        except QmpError:
            self.qmp.command("blockdev-del", **{"node-name": node})
            raise
        self._port_of[volume_id] = free[0]
        entry = Attached(volume_id, loop="", rdev=0, name=f"nvme@{free[0]}", node=Path(), sys_dir=Path())
        self.attached[volume_id] = entry
        return entry

    def is_mounted(self, volume_id: str) -> bool:
        """Only the guest knows; an unplug of a mounted device is the guest's loss, as on EC2 with --force."""
        return False

    def detach(self, volume_id: str, force_unmount: bool = False) -> None:
        if self.attached.pop(volume_id, None) is None:
            return
        self._port_of.pop(volume_id, None)
        try:
            self.qmp.command("device_del", id=volume_id)
            self.qmp.wait_event("DEVICE_DELETED", volume_id, UNPLUG_TIMEOUT)
            self.qmp.command("blockdev-del", **{"node-name": f"ebs-{volume_id}"})
        except (QmpError, OSError):
            pass  # the VM is gone, and its devices with it

    def detach_all(self, force_unmount: bool = True) -> None:
        for volume_id in list(self.attached):
            self.detach(volume_id, force_unmount=force_unmount)

    def device_for(self, volume_id: str) -> Path | None:
        return None
