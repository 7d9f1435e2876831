"""The EC2 model the agent ships is botocore's, cut to exactly the actions system/ec2.py calls."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EC2_MODULE = ROOT / "snaptastic_boot" / "system" / "ec2.py"
CALL = re.compile(r"self\._client\.([a-z][a-z0-9_]*)\(")
PAGINATOR = re.compile(r"self\._client\.get_paginator\(\s*[\"']([a-z][a-z0-9_]*)[\"']")
NOT_OPERATIONS = {"get_paginator", "get_waiter", "can_paginate", "close"}


def _trimmer() -> Any:
    spec = importlib.util.spec_from_loader("trim_ec2_model", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(ROOT / "scripts" / "trim-ec2-model")
    exec(compile((ROOT / "scripts" / "trim-ec2-model").read_text(), "trim-ec2-model", "exec"), module.__dict__)
    return module


def _shipped() -> tuple[dict[str, Any], str]:
    from snaptastic_boot.system import ec2

    (path,) = sorted(ec2.MODEL_DIR.glob("ec2/*/service-2.json"))
    return json.loads(path.read_text()), path.parent.name


def test_the_model_holds_exactly_the_actions_ec2_py_calls() -> None:
    pytest.importorskip("botocore")
    from botocore import xform_name

    from snaptastic_boot.system import ec2

    model, _ = _shipped()
    assert sorted(model["operations"]) == sorted(ec2.ACTIONS)
    text = EC2_MODULE.read_text()
    called = (set(CALL.findall(text)) - NOT_OPERATIONS) | set(PAGINATOR.findall(text))
    assert called == {xform_name(a) for a in ec2.ACTIONS}


def test_the_model_is_the_installed_botocores_cut_down() -> None:
    pytest.importorskip("botocore")
    import botocore

    from snaptastic_boot.system import ec2

    trimmer = _trimmer()
    installed, version, source = trimmer.installed_model()
    shipped, shipped_version = _shipped()
    assert shipped_version == version
    fresh = trimmer.trim(installed, ec2.ACTIONS, source)
    if shipped["x-snaptastic"]["trimmed_from"] == f"botocore {botocore.__version__}":
        assert fresh == shipped, "run scripts/trim-ec2-model"
        return
    # Another botocore: what the agent sends must still be what this botocore's model describes.
    for action in ec2.ACTIONS:
        mine = shipped["shapes"][shipped["operations"][action]["input"]["shape"]]["members"]
        theirs = installed["shapes"][installed["operations"][action]["input"]["shape"]]["members"]
        assert set(mine) <= set(theirs) or action == "CreateVolume", f"{action}: run scripts/trim-ec2-model"


def test_a_session_uses_the_shipped_model(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    from snaptastic_boot.system import ec2

    client = ec2.Ec2("eu-west-1", deadline=60)._client
    assert sorted(client.meta.service_model.operation_names) == sorted(ec2.ACTIONS)
    assert client.can_paginate("describe_snapshots") and client.can_paginate("describe_volumes")
    assert "system/botocore_data/ec2/*/service-2.json" in (ROOT / "setup.cfg").read_text()  # shipped as package data
