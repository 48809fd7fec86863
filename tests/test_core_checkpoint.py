"""Checkpoints: self-describing, atomic, never unpickle code; registry resolution."""

import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from core_helpers import tiny_model

from mcrave.checkpoint import load_checkpoint, load_model, save_checkpoint
from mcrave.config import preset
from mcrave.registry import RegistryError, list_models, publish_version, resolve_model


def test_roundtrip_is_self_describing(tmp_path):
    model = tiny_model(channels=3, projection="dct")
    path = save_checkpoint(
        tmp_path / "m.ckpt", model, step=7, extra={"note": "x", "t": torch.ones(2)}
    )
    payload = load_checkpoint(path)
    for key in (
        "format_version",
        "config",
        "channels",
        "sample_rate",
        "channel_names",
        "projection",
        "code_version",
        "step",
    ):
        assert key in payload
    assert payload["channels"] == 3 and payload["step"] == 7 and payload["projection"] == "dct"
    loaded, meta = load_model(path)
    assert loaded.cfg == model.cfg
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_no_silent_overwrite(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "m.ckpt", model)
    with pytest.raises(FileExistsError, match="--force"):
        save_checkpoint(tmp_path / "m.ckpt", model)
    save_checkpoint(tmp_path / "m.ckpt", model, force=True)


class Evil:
    """Unpickling this creates `marker` (an absolute path: `touch` must not depend on the cwd)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# the hostile file is written with pickle's protocol 4; torch notes it before refusing the code
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "mcrave-checkpoint", "payload": Evil(marker)}, path)
    with pytest.raises(ValueError, match="not an mcrave checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    (tmp_path / "junk.ckpt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_checkpoint(tmp_path / "junk.ckpt")


def test_kill_between_write_and_rename_keeps_old_checkpoint(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "m.ckpt", model, step=1)
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from core_helpers import tiny_model; from mcrave.checkpoint import save_checkpoint;"
        "from mcrave.atomic import fault_from_env;"
        f"save_checkpoint({str(path)!r}, tiny_model(seed=5), step=2, force=True,"
        " before_rename=fault_from_env())"
    )
    env = {**os.environ, "MCRAVE_FAULT": "kill_before_rename"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=os.path.dirname(os.path.dirname(__file__))
    )
    assert proc.returncode == -9
    assert load_checkpoint(path)["step"] == 1


def test_registry_resolves_latest_and_rejects_corruption(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", tiny_model())
    root = tmp_path / "models"
    assert publish_version(root, "demo", ckpt) == 1
    assert publish_version(root, "demo", ckpt) == 2
    assert list_models(root) == {"demo": [1, 2]}
    assert resolve_model(root / "demo").version == 2
    assert resolve_model(root / "demo" / "1").version == 1
    (root / "demo" / "2" / "model.ckpt").write_bytes(b"truncated")
    with pytest.raises(RegistryError, match="sha256 mismatch"):
        resolve_model(root / "demo")
    with pytest.raises(RegistryError, match="no such"):
        resolve_model(root / "nope")


def test_config_roundtrip_rejects_unknown_keys():
    from mcrave.config import Config

    cfg = preset("cpu-small", channels=4)
    assert Config.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict()
    data["model"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        Config.from_dict(data)


def test_publish_strips_training_state_and_exports(tmp_path):
    from mcrave.publish import publish_checkpoint

    ckpt = save_checkpoint(
        tmp_path / "run.ckpt", tiny_model(), step=42, extra={"optimizer": torch.ones(1000)}
    )
    version, step = publish_checkpoint(tmp_path / "models", "demo", ckpt)
    assert (version, step) == (1, 42)
    entry = resolve_model(tmp_path / "models" / "demo")
    assert load_checkpoint(entry.checkpoint)["extra"] == {}
    assert entry.manifest["step"] == 42 and "model.ts" in entry.manifest["sha256"]
