"""The cloud-init userdata we ship: valid for cloud-init, readable by the agent, rebuilt from its sources.

cloud-init's own tools judge the cloud-config: `cloud-init schema` for every #cloud-config (the files,
the parts of the built MIME archives, and the examples in the README), and cloud-init's userdata processor for
the MIME archives. Those come from Debian's cloud-init package and run with the system python3; without
them the tests skip, except in CI (CI=true) where that is a failure.
"""

from __future__ import annotations

import email
import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLOUDINIT = ROOT / "cloudinit"
EXAMPLES = ("multipart", "ami")
README = ROOT / "README.md"
SECTIONS = ("Using with cloud-init", "Baking into an AMI")
IDENTITY = {"role": "solr", "cluster": "search", "environment": "production"}
NOT_IMPLEMENTED = 5
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def require(tool: str) -> str:
    path = shutil.which(tool, path=SYSTEM_PATH)
    if path is None:
        message = f"needs {tool} (Debian package cloud-init)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must install it: {message}")
        pytest.skip(message)
    return path


def make_userdata():
    spec = importlib.util.spec_from_file_location("make_userdata", CLOUDINIT / "make_userdata.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mime_parts(data: bytes) -> list[tuple[str, bytes]]:
    message = email.message_from_bytes(data)
    assert message.is_multipart()
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in message.walk() if not p.is_multipart()]


def cloud_configs() -> list[tuple[str, str]]:
    """(where, text) of every #cloud-config we ship or show in the docs."""
    found = []
    for name in EXAMPLES:
        found.append((f"cloudinit/{name}/cloud-config.yaml", (CLOUDINIT / name / "cloud-config.yaml").read_text()))
        for i, (ctype, payload) in enumerate(mime_parts((CLOUDINIT / name / "userdata.mime").read_bytes())):
            if ctype == "text/cloud-config":
                found.append((f"cloudinit/{name}/userdata.mime part {i}", payload.decode()))
    for title in SECTIONS:
        for i, block in enumerate(re.findall(r"```yaml\n(#cloud-config\n.*?)```", readme_section(title), re.S)):
            found.append((f"README {title} block {i}", block))
    return found


def readme_section(title: str) -> str:
    """The text of one `## title` section of the README, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.mark.parametrize("where,text", cloud_configs(), ids=lambda v: v if v.startswith(("cloudinit", "README")) else "")
def test_cloud_config_passes_cloud_inits_schema(where: str, text: str, tmp_path: Path):
    cloud_init = require("cloud-init")
    path = tmp_path / "cloud-config.yaml"
    path.write_text(text)
    proc = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
    )
    assert proc.returncode == 0, f"{where}: {proc.stdout}{proc.stderr}"
    assert "Valid cloud-config" in proc.stdout


def test_docs_show_cloud_configs():
    where = [w for w, _ in cloud_configs() if w.startswith("README")]
    assert all(any(w.startswith(f"README {title}") for w in where) for title in SECTIONS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_built_userdata_is_up_to_date(name: str):
    tool = make_userdata()
    src = CLOUDINIT / name
    parts = [(f, tool.guess_type((src / f).read_text()), (src / f).read_text()) for f in ("cloud-config.yaml", "identity.json")]
    rebuilt = tool.build(parts)
    assert (src / "userdata.mime").read_bytes() == rebuilt, (
        f"rebuild it: python3 cloudinit/make_userdata.py -o cloudinit/{name}/userdata.mime "
        f"cloudinit/{name}/cloud-config.yaml cloudinit/{name}/identity.json"
    )
    assert [c for c, _ in mime_parts(rebuilt)] == ["text/cloud-config", "application/json"]
    assert len(rebuilt) < tool.EC2_USERDATA_LIMIT


def test_make_userdata_cli(tmp_path: Path):
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n")
    script = str(CLOUDINIT / "make_userdata.py")
    proc = subprocess.run([sys.executable, script, str(unknown)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "FILE:TYPE" in proc.stderr
    out = tmp_path / "u.gz"
    src = CLOUDINIT / "multipart"
    args = [str(src / "cloud-config.yaml"), str(src / "identity.json"), f"{unknown}:text/x-shellscript"]
    proc = subprocess.run([sys.executable, script, "--gzip", "-o", str(out), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    types = [c for c, _ in mime_parts(gzip.decompress(out.read_bytes()))]
    assert types == ["text/cloud-config", "application/json", "text/x-shellscript"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_agent_reads_the_identity_part(name: str):
    from snaptastic_boot.config import userdata

    data = (CLOUDINIT / name / "userdata.mime").read_bytes()
    assert userdata.parse(data) == IDENTITY
    assert userdata.parse(gzip.compress(data)) == IDENTITY


@pytest.mark.parametrize("name", EXAMPLES)
def test_written_config_is_valid_for_the_agent(name: str, tmp_path: Path):
    yaml = pytest.importorskip("yaml")
    from snaptastic_boot.config import settings

    config = yaml.safe_load((CLOUDINIT / name / "cloud-config.yaml").read_text())
    files = {f["path"]: f["content"] for f in config["write_files"]}
    path = tmp_path / "snaptastic.json"
    path.write_text(files["/etc/snaptastic/snaptastic.json"])
    assert "solr" in settings.load_json_config(path)
    if name == "ami":
        defaults = files["/etc/default/snaptastic"]
        shipped = (ROOT / "packaging" / "deb" / "etc" / "default" / "snaptastic").read_text()
        assert set(re.findall(r"^(\w+)=", defaults, re.M)) == set(re.findall(r"^(\w+)=", shipped, re.M))


CLOUD_INIT_PROBE = r"""
import json, logging, os, sys, tempfile
from cloudinit import handlers, user_data
from cloudinit.handlers.cloud_config import CloudConfigPartHandler
from cloudinit.helpers import Paths
from cloudinit.util import load_yaml

warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
probe = logging.getLogger("probe")
probe.addHandler(Collect())
handlers.LOG = user_data.LOG = probe

d = tempfile.mkdtemp()
paths = Paths({"cloud_dir": d, "run_dir": d})
message = user_data.UserDataProcessor(paths).process(open(sys.argv[1], "rb").read())
handler = CloudConfigPartHandler(paths)
handler.cloud_fn = os.path.join(d, "cloud-config.txt")
data = {"handlers": {t: handler for t in handler.list_types()}, "handlerdir": d, "data": None,
        "frequency": "once-per-instance", "handlercount": 0, "excluded": []}
handlers.walk(message, handlers.walker_callback, data)
handler.handle_part(None, handlers.CONTENT_END, None, None, None, None)
print(json.dumps({"config": sorted(load_yaml(open(handler.cloud_fn).read())), "warnings": warnings}))
"""


@pytest.mark.parametrize("name", EXAMPLES)
def test_cloud_init_takes_the_cloud_config_and_skips_the_json(name: str, tmp_path: Path):
    """cloud-init's own userdata processing: the cloud-config is merged, the JSON part is one warning."""
    require("cloud-init")
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", CLOUD_INIT_PROBE, str(CLOUDINIT / name / "userdata.mime")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "write_files" in result["config"]
    assert len(result["warnings"]) == 1 and "Unhandled unknown content-type (application/json)" in result["warnings"][0]


def test_snaptastic_test_reads_the_multipart_userdata_from_imds(lab):
    lab.set_userdata((CLOUDINIT / "multipart" / "userdata.mime").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "snaptastic_boot", "test"],
        env=lab.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode == NOT_IMPLEMENTED:
        pytest.xfail("snaptastic test not implemented yet")
    assert proc.returncode == 0, proc.stderr
    for key, value in IDENTITY.items():
        assert re.search(rf"{key}\W+{value}", proc.stdout), f"{key}={value} not in: {proc.stdout}"
