"""Which NVMe devices count as EBS volumes: Amazon's model string, plus models named in SNAPTASTIC_NVME_MODELS."""

from __future__ import annotations

from pathlib import Path

from snaptastic_boot.system.blockdev import BlockDevices
from snaptastic_boot.tunables import Tunables


def _sysfs(root: Path, devices: dict[str, tuple[str, str]]) -> dict[str, str]:
    for name, (model, serial) in devices.items():
        device = root / "sys" / "block" / name / "device"
        device.mkdir(parents=True)
        (device / "model").write_text(model.ljust(40) + "\n")  # the kernel pads the model with spaces
        (device / "serial").write_text(serial + "\n")
    (root / "dev").mkdir()
    return {"SNAPTASTIC_SYS_ROOT": str(root / "sys"), "SNAPTASTIC_DEV_ROOT": str(root / "dev")}


DEVICES = {
    "nvme0n1": ("Amazon Elastic Block Store", "vol0aaaaaaaaaaaaaaaa"),
    "nvme1n1": ("QEMU NVMe Ctrl", "vol0bbbbbbbbbbbbbbbb"),
    "nvme2n1": ("Amazon EC2 NVMe Instance Storage", "AWS1234567890"),
}


def test_only_amazons_model_is_ebs_by_default(tmp_path: Path) -> None:
    paths = Tunables.from_env(_sysfs(tmp_path, DEVICES)).paths
    assert BlockDevices(paths).nvme_volumes() == {"vol-0aaaaaaaaaaaaaaaa": tmp_path / "dev" / "nvme0n1"}


def test_extra_models_are_accepted_when_named(tmp_path: Path) -> None:
    env = _sysfs(tmp_path, DEVICES) | {"SNAPTASTIC_NVME_MODELS": " QEMU NVMe Ctrl , Other Model"}
    tunables = Tunables.from_env(env)
    assert tunables.paths.extra_nvme_models == ("QEMU NVMe Ctrl", "Other Model")
    assert BlockDevices(tunables.paths).nvme_volumes() == {
        "vol-0aaaaaaaaaaaaaaaa": tmp_path / "dev" / "nvme0n1",
        "vol-0bbbbbbbbbbbbbbbb": tmp_path / "dev" / "nvme1n1",
    }


def test_an_empty_setting_adds_nothing(tmp_path: Path) -> None:
    assert Tunables.from_env({"SNAPTASTIC_NVME_MODELS": " , "}).paths.extra_nvme_models == ()
